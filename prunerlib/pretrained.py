"""The pretrained-model store: one pretraining per pretrain key, shared by every trial.

Trials that share data, model, seed and pretraining settings (`TrialConfig.pretrain_key`)
load one saved model instead of each training its own. A file lock makes concurrent trials
on one machine wait for the first to finish pretraining rather than duplicate it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.models import build_model
from prunerlib.training import accuracy, train


@dataclass
class PretrainResult:
    acc_test: float
    acc_train: float
    acc_val: float
    epochs_run: int
    wall_s: float
    reused: bool = False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_or_pretrain(cfg: TrialConfig, data: Data, store: str | Path, device: torch.device,
                     progress: bool = True) -> tuple[nn.Module, PretrainResult]:
    store = Path(store)
    key = cfg.pretrain_key()
    folder = store / key
    model = build_model(cfg, data.in_features, data.classes).to(device)
    with _locked(store / f".{key}.lock"):
        if (folder / "model.pt").exists():
            model.load_state_dict(torch.load(folder / "model.pt", map_location=device))
            metrics = json.loads((folder / "metrics.json").read_text())
            return model, PretrainResult(**{**metrics, "reused": True})
        log = train(model, data, cfg, epochs=cfg.epochs_pretrain, seed=cfg.seed,
                    plateau=cfg.pretrain_stop == "plateau", desc="pretrain", progress=progress)
        result = PretrainResult(
            acc_test=accuracy(model, data.test_x, data.test_y),
            acc_train=accuracy(model, data.train_x, data.train_y),
            acc_val=accuracy(model, data.val_x, data.val_y),
            epochs_run=log.epochs_run, wall_s=log.wall_s,
        )
        _save(folder, model, cfg, result, log.val_acc)
    return model, result


def _save(folder: Path, model: nn.Module, cfg: TrialConfig, result: PretrainResult, val_curve: list[float]) -> None:
    """Write into a temporary folder, then rename: a reader never sees a half-saved model."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        metrics = {k: v for k, v in asdict(result).items() if k != "reused"}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "config.json").write_text(json.dumps(
            {"pretrain_key": cfg.pretrain_key(), "config": cfg.to_dict(), "val_acc_curve": val_curve}, indent=2))
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
