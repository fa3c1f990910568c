"""Training and evaluation loops shared by pretraining and fine-tuning."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.errors import TrainingDiverged
from prunerlib.masks import Masks


@dataclass
class StageLog:
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
