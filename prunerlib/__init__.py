"""prunerlib: pretrain -> prune -> fine-tune trials for pruning research."""

__version__ = "0.1.0"
