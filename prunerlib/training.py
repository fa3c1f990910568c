"""Training and evaluation loops shared by pretraining and fine-tuning."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.errors import ConfigError, TrainingDiverged
from prunerlib.masks import Masks


# cuBLAS is deterministic only with a fixed workspace configuration, which PyTorch reads once,
# when the process first uses cuBLAS: it must be in the environment before CUDA starts.
CUBLAS_WORKSPACE = ":4096:8"


def set_numerics(device: torch.device, exact: bool) -> None:
    """Put the process in the numerics a trial on `device` runs with (process-wide state, so
    set both ways: a reused worker must not carry one trial's mode into the next).

    exact: IEEE fp32 matmuls and convolutions (no TF32) and deterministic kernels, raising for
    an op that has none. Otherwise PyTorch's defaults: cuDNN convolutions may use TF32 on
    Ampere and later, and some backward kernels (conv weight gradients) are nondeterministic."""
    if device.type == "cuda" and os.environ.get("CUBLAS_WORKSPACE_CONFIG") is None:
        if exact and torch.cuda.is_initialized():
            raise ConfigError(f"exact: CUDA started in this process before CUBLAS_WORKSPACE_CONFIG was set; set "
                              f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} in the worker's environment")
        # Set for every CUDA trial, exact or not, so a worker that later runs an exact trial
        # started cuBLAS with it (the same size as PyTorch's default on recent GPUs).
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default as well
    torch.backends.cudnn.allow_tf32 = not exact  # PyTorch's default is True
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.deterministic = exact
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing: not repeatable
    # Only when it changes: the call imports torch._inductor's config, over a second of every
    # sweep worker's start, to tell a compiler this project never uses.
    if torch.are_deterministic_algorithms_enabled() != exact or torch.is_deterministic_algorithms_warn_only_enabled():
        torch.use_deterministic_algorithms(exact)


def tf32_allowed() -> bool:
    """Whether CUDA matmuls or convolutions may round fp32 inputs to TF32 right now."""
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
                or torch.get_float32_matmul_precision() != "highest")


@dataclass
class StageLog:
    """What a single model's training stage (`train`) returns: its per-epoch training loss and
    validation accuracy (`batched.PopulationStageLog` is a population's)."""
    epochs_run: int = 0
    wall_s: float = 0.0
    val_acc: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    was_training = model.training
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch)))
    model.train(was_training)
    return correct / len(y)


def make_optimizer(cfg: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def plateaued(val_acc: list[float], patience: int, min_delta: float) -> bool:
    """True once the best validation accuracy of the last `patience` epochs beats the best
    before them by less than `min_delta` (paper: train until improvement starts to slow)."""
    if len(val_acc) <= patience:
        return False
    return max(val_acc[-patience:]) - max(val_acc[:-patience]) < min_delta


def diverged(loss: float, epoch: int, desc: str) -> TrainingDiverged:
    return TrainingDiverged(f"loss became {loss} in epoch {epoch} of {desc}")


def epoch_order(n: int, batch_size: int, order: torch.Generator,
                flips: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One epoch's example order (consecutive `batch_size` slices are the batches) and, for
    images, which examples to flip. Drawn the way a stage always draws them, batch by batch,
    so a population member sees exactly its single run's batches."""
    perm = torch.randperm(n, generator=order)
    if not flips:
        return perm, None
    return perm, torch.cat([torch.rand(len(idx), generator=order) < 0.5 for idx in perm.split(batch_size)])


def train(model: nn.Module, data: Data, cfg: TrialConfig, *, epochs: int, seed: int,
          masks: Masks | None = None, plateau: bool = False, desc: str = "train",
          progress: bool = True) -> StageLog:
    """Train `epochs` epochs (fewer with `plateau`) with a fresh optimiser, so no optimiser
    state from an earlier stage can move a weight pruned since."""
    from tqdm.auto import tqdm

    optimizer = make_optimizer(cfg, model)
    order = torch.Generator().manual_seed(seed)  # own data order and flips per stage
    log = StageLog()
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=not progress or None)
    model.train()
    for epoch in bar:
        total = 0.0
        perm, flips = epoch_order(len(data.train_y), cfg.batch_size, order, data.flip)
        # One upload of the epoch's order (and flips), not one per batch.
        perm = perm.to(data.train_x.device)
        flips = None if flips is None else flips.to(data.train_x.device)
        for lo in range(0, len(perm), cfg.batch_size):
            idx = perm[lo:lo + cfg.batch_size]
            x, y = data.train_x[idx], data.train_y[idx]
            if flips is not None:
                x = torch.where(flips[lo:lo + cfg.batch_size, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise diverged(loss.item(), epoch + 1, desc)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                masks.mask_grads(model)
            optimizer.step()
            total += loss.item() * len(idx)
        log.loss.append(total / len(data.train_y))
        log.val_acc.append(accuracy(model, data.val_x, data.val_y))
        log.epochs_run = epoch + 1
        bar.set_postfix(loss=f"{log.loss[-1]:.3f}", val_acc=f"{log.val_acc[-1]:.3f}")
        if plateau and plateaued(log.val_acc, cfg.patience, cfg.min_delta):
            break
    bar.close()
    log.wall_s = time.perf_counter() - start
    return log
