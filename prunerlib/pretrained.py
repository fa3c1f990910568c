"""The pretrained-model store: one pretraining per store key, shared by every trial.

Trials that share data, model, seed and pretraining settings load one saved model instead of
each training its own. The store key is the settings (`TrialConfig.pretrain_key`), the data's
fingerprint (what the data is, not its path: a file rewritten in place is pretrained again),
the type of device the model is pretrained on (cpu / cuda: their kernels round differently,
so a CPU and a GPU trial of one configuration each pretrain their own model, whichever takes
the lock first) and `FORMAT_VERSION`. A file lock per key makes concurrent trials on one machine wait for the
first to finish pretraining rather than duplicate it.

An entry is `<key>/{model.pt, metrics.json, config.json, sha256sums}`. The store is shared
state that outlives crashes and copies, so an entry is verified before it is used: one that
does not (truncated, half-copied, edited) is removed with a warning and pretrained again.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import re
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.errors import TrainingDiverged, is_environment_fault
from prunerlib.files import atomic_folder, locked
from prunerlib.models import build_model
from prunerlib.population import pretrain_models
from prunerlib.training import accuracy

log = logging.getLogger("prunerlib.pretrained")

# Bump whenever training or model code changes what a pretrained model is (architecture,
# initialisation, pretraining loop, what metrics.json means): entries of other versions are
# then never reused.
FORMAT_VERSION = 2  # 2: FFNs pretrained by the compiled kernel where it runs (population.pretrain_models)

_CHECKED = ("model.pt", "metrics.json")  # what sha256sums covers


@dataclass
class PretrainResult:
    acc_test: float
    acc_train: float
    acc_val: float
    epochs_run: int
    wall_s: float
    reused: bool = False
    data_fingerprint: str = ""


def store_key(cfg: TrialConfig, data_fingerprint: str, device: torch.device | str = "cpu") -> str:
    """The store folder of a trial's pretrained model on `device`. Only the device's type
    counts, so a GPU sweep pretrains each model once across its GPUs (which GPU, and so which
    rounding, a row's pretrained model had: its `gpu_name` and versions say)."""
    blob = json.dumps([FORMAT_VERSION, cfg.pretrain_key(), data_fingerprint, torch.device(device).type])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_pretrain(cfg: TrialConfig, data: Data, store: str | Path, device: torch.device,
                     progress: bool = True) -> tuple[nn.Module, PretrainResult]:
    """`cfg`'s pretrained model and how it did: from the store, or pretrained and stored."""
    (found,) = load_or_pretrain_many([cfg], data, store, device, progress)
    if isinstance(found, Exception):
        raise found
    return found


def load_or_pretrain_many(cfgs: Sequence[TrialConfig], data: Data, store: str | Path, device: torch.device,
                          progress: bool = True) -> list[tuple[nn.Module, PretrainResult] | TrainingDiverged]:
    """`load_or_pretrain` for configurations of one data (one per store key): the models the
    store lacks are pretrained together (`population.pretrain_models`). A model whose
    pretraining diverged is its TrainingDiverged, in its place. The keys' locks are taken in
    one order, so two processes asking for overlapping sets wait rather than deadlock."""
    store = Path(store)
    keys = [store_key(cfg, data.fingerprint, device) for cfg in cfgs]
    if len(set(keys)) != len(keys):
        raise ValueError("load_or_pretrain_many: one configuration per store key")
    if store not in _CLEANED:  # once a process: every trial of a pack would glob a shared store again
        _clean_leftovers(store)
        _CLEANED.add(store)
    found: list[tuple[nn.Module, PretrainResult] | TrainingDiverged | None] = [None] * len(cfgs)
    with ExitStack() as held:
        for key in sorted(keys):
            held.enter_context(locked(store / f".{key}.lock"))
        todo = []
        for i, (cfg, key) in enumerate(zip(cfgs, keys)):
            model = build_model(cfg, data.in_features, data.classes).to(device)
            if (store / key).exists():
                try:
                    metrics = _verified(store / key, model, device)
                    found[i] = model, PretrainResult(**{**metrics, "reused": True, "data_fingerprint": data.fingerprint})
                    continue
                except _Damaged as exc:
                    log.warning("pretrained model %s does not verify (%s): removed, pretraining again", store / key, exc)
                    shutil.rmtree(store / key)
                    model = build_model(cfg, data.in_features, data.classes).to(device)  # load_state_dict may have begun
            todo.append((i, model))
        runs = pretrain_models([model for _, model in todo], [cfgs[i] for i, _ in todo], data, progress) if todo else []
        for (i, model), run in zip(todo, runs):
            if isinstance(run, TrainingDiverged):
                found[i] = run
                continue
            result = PretrainResult(
                acc_test=accuracy(model, data.test_x, data.test_y),
                acc_train=accuracy(model, data.train_x, data.train_y),
                acc_val=accuracy(model, data.val_x, data.val_y),
                epochs_run=run.epochs_run, wall_s=run.wall_s, data_fingerprint=data.fingerprint,
            )
            _save(store / keys[i], model, cfgs[i], result, run.val_acc, device)
            found[i] = model, result
    return found  # type: ignore[return-value]  # every position is filled


def for_members(cfgs: Sequence[TrialConfig], data: Data, store: str | Path, device: torch.device,
                progress: bool = True) -> list[tuple[nn.Module, PretrainResult] | TrainingDiverged]:
    """Each configuration's pretrained model, a copy of its own, from one pretraining per key
    (`load_or_pretrain_many`); only the first member of a key pretrained here says so
    (`reused` False). A key whose pretraining diverged is its members' TrainingDiverged."""
    firsts: dict[str, TrialConfig] = {}
    for cfg in cfgs:
        firsts.setdefault(cfg.pretrain_key(), cfg)
    found = dict(zip(firsts, load_or_pretrain_many(list(firsts.values()), data, store, device, progress)))
    members = []
    for cfg in cfgs:
        got = found[cfg.pretrain_key()]
        members.append(got)
        if not isinstance(got, Exception):
            found[cfg.pretrain_key()] = copy.deepcopy(got[0]), replace(got[1], reused=True)  # the next member's
    return members


class _Damaged(Exception):
    """A store entry whose files are missing or do not verify: repaired by pretraining again."""


def _verified(folder: Path, model: nn.Module, device: torch.device) -> dict:
    """Load the entry into `model` and return its metrics, or raise _Damaged saying what is wrong.
    Files are read first: a disk that cannot be read (EIO, permissions) is the machine's fault
    and raises OSError as it is; only what was read and found wrong is damage."""
    raw = {}
    for name in ("sha256sums", *_CHECKED):
        try:
            raw[name] = (folder / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise _Damaged(f"{name} is missing") from None
    try:
        sums = {name: digest for digest, name in (line.split() for line in raw["sha256sums"].decode().splitlines())}
        for name in _CHECKED:
            if hashlib.sha256(raw[name]).hexdigest() != sums.get(name):
                raise _Damaged(f"{name} does not match its checksum")
        state = torch.load(io.BytesIO(raw["model.pt"]), map_location=device, weights_only=True)
        model.load_state_dict(state)
        metrics = json.loads(raw["metrics.json"])
        PretrainResult(**metrics)  # the fields this version expects, no more, no fewer
    except _Damaged:
        raise
    except Exception as exc:  # noqa: BLE001  checksummed yet unloadable: written by other code
        if is_environment_fault(exc):  # out of GPU memory or a broken CUDA context while loading
            raise
        raise _Damaged(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return metrics


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_CLEANED: set[Path] = set()


def _clean_leftovers(store: Path) -> None:
    """Remove temporary folders (`.<key>.xxxx.tmp`; before prunerlib.files, `.<key>-xxxx`) that a
    killed writer left. Only those whose key lock is free: a live writer holds its lock until
    its folder is renamed into place."""
    if not store.is_dir():
        return
    for tmp in store.iterdir():
        named = re.fullmatch(r"\.([0-9a-f]{16})[-.].*", tmp.name)
        if named is None or not tmp.is_dir():
            continue
        with locked(store / f".{named[1]}.lock", wait=False) as free:
            if free:
                shutil.rmtree(tmp, ignore_errors=True)


def _save(folder: Path, model: nn.Module, cfg: TrialConfig, result: PretrainResult, val_curve: list[float],
          device: torch.device) -> None:
    """Write into a temporary folder, then rename: a reader never sees a half-saved model."""
    def write(tmp: Path) -> None:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        metrics = {k: v for k, v in asdict(result).items() if k not in ("reused", "data_fingerprint")}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "config.json").write_text(json.dumps(
            {"store_key": folder.name, "format_version": FORMAT_VERSION, "pretrain_key": cfg.pretrain_key(),
             "data_fingerprint": result.data_fingerprint, "device_type": device.type,
             "config": cfg.to_dict(), "val_acc_curve": val_curve},
            indent=2))
        (tmp / "sha256sums").write_text("".join(f"{_sha256(tmp / name)}  {name}\n" for name in _CHECKED))

    atomic_folder(folder, write)
