"""prunerlib: pretrain -> prune -> fine-tune trials for pruning research."""

__version__ = "0.1.0"

# The built-in pruners register themselves on import: every setting, flag and column they own
# is known as soon as anything of prunerlib is.
from prunerlib import pruners  # noqa: E402,F401

from prunerlib.saved import load_pruned  # noqa: E402,F401  a saved pruned network, ready to run
