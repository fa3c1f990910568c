"""A trial's data as tensors: train / validation / test, preprocessed, on the trial's device.

The validation slice (for plateau stopping and pruning decisions) always comes out of the
training part; the test part is only ever evaluated, never used to decide anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunerlib import waveform
from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError, DataError


@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int
    flip: bool  # random horizontal flips while training (images only)
    # What the data is, not where it lives: the pretrained store keys on it, so data rewritten
    # at the same path is pretrained again. Empty for data built by hand (tests, benchmarks).
    fingerprint: str = ""
    # What a saved model needs to be fed raw inputs (`saved.preprocess`): x = (raw * scale -
    # mean) / std, with the fitting part's statistics, and what each output means.
    class_names: tuple[str, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        return int(self.train_x.shape[1])

    def to(self, device: torch.device) -> Data:
        for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def stratified_split(y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) index arrays; `frac` of each class held out, chosen by seed."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(frac * len(idx)))
        held.append(idx[:cut])
        kept.append(idx[cut:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def load_data(cfg: TrialConfig, image_cache_dir: str | Path | None = None) -> Data:
    if cfg.dataset == "waveform":
        return _waveform(cfg)
    return _catsdogs(cfg, image_cache_dir)


def _waveform(cfg: TrialConfig) -> Data:
    if cfg.data:
        x, y, fingerprint = waveform.read_uci_fingerprinted(cfg.data)
        if x.shape[1] != cfg.attributes:
            raise ConfigError(f"attributes: {cfg.data} has {x.shape[1]} attributes; pass --attributes {x.shape[1]}")
        fingerprint = f"sha256:{fingerprint}"
    else:
        x, y = waveform.generate(cfg.n, cfg.attributes, cfg.data_seed)
        # The generator's settings are the data; the config's pretrain key holds them already.
        fingerprint = (f"generated-v{waveform.GENERATOR_VERSION}:n={cfg.n},attributes={cfg.attributes},"
                       f"data_seed={cfg.data_seed}")
    train, test = stratified_split(y, cfg.test_frac, cfg.data_seed)
    fit, val = stratified_split(y[train], cfg.val_frac, cfg.data_seed + 1)
    fit, val = train[fit], train[val]
    _check_parts(cfg, y, fit, val, test)
    # Standardise with the fitting part's statistics: sigmoid units train badly on raw
    # attributes spanning about -3..9, and no held-out example may shape the scaling.
    mean, std = x[fit].mean(0), x[fit].std(0) + 1e-8
    x = (x - mean) / std
    t = lambda idx: (torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))  # noqa: E731
    (fx, fy), (vx, vy), (tx, ty) = t(fit), t(val), t(test)
    return Data(fx, fy, vx, vy, tx, ty, classes=3, flip=False, fingerprint=fingerprint,
                class_names=waveform.CLASS_NAMES,
                preprocessing={"scale": 1.0, "mean": torch.from_numpy(mean), "std": torch.from_numpy(std),
                               "inputs": f"{cfg.attributes} Waveform attributes, as in the UCI file"})


# Per class: a fitting part of at least two, and at least one in validation (when there is
# one) and test, or accuracies divide by zero and plateau stopping has nothing to watch.
_MIN_FIT, _MIN_HELD = 2, 1


def _check_parts(cfg: TrialConfig, y: np.ndarray, fit: np.ndarray, val: np.ndarray, test: np.ndarray) -> None:
    counts = lambda idx: np.bincount(y[idx], minlength=3)  # noqa: E731
    if (counts(fit).min() >= _MIN_FIT and counts(test).min() >= _MIN_HELD
            and (cfg.val_frac == 0 or counts(val).min() >= _MIN_HELD)):
        return
    need = next(n for n in range(1, 10**6) if _parts_of(n, cfg.test_frac, cfg.val_frac))
    have = ", ".join(f"class {c}: {k}" for c, k in enumerate(np.bincount(y, minlength=3)))
    where = f"data: {cfg.data}: {len(y)} rows" if cfg.data else f"n: {cfg.n} generated instances"
    raise (DataError if cfg.data else ConfigError)(
        f"{where} are too few to split into training, validation and test parts ({have}); "
        f"with test_frac {cfg.test_frac} and val_frac {cfg.val_frac} each class needs at least {need} rows")


def _parts_of(n: int, test_frac: float, val_frac: float) -> bool:
    """Whether `n` rows of a class split into enough of each part (as stratified_split cuts)."""
    test = int(round(test_frac * n))
    val = int(round(val_frac * (n - test)))
    return test >= _MIN_HELD and n - test - val >= _MIN_FIT and (val_frac == 0 or val >= _MIN_HELD)


def _catsdogs(cfg: TrialConfig, image_cache_dir: str | Path | None) -> Data:
    from prunerlib.images import CLASSES, load_catsdogs  # torchvision import only when images are used

    train, test = load_catsdogs(
        cfg.data, size=cfg.image_size, train_per_class=cfg.train_per_class,
        test_per_class=cfg.test_per_class, seed=cfg.data_seed, cache_dir=image_cache_dir,
    )
    y = train.labels.numpy()
    fit, val = stratified_split(y, cfg.val_frac, cfg.data_seed + 1)
    images = train.images.float() / 255.0
    mean = images[fit].mean((0, 2, 3), keepdim=True)
    std = images[fit].std((0, 2, 3), keepdim=True)
    norm = lambda t: (t - mean) / std  # noqa: E731
    fit_t, val_t = torch.from_numpy(fit), torch.from_numpy(val)
    return Data(
        norm(images[fit_t]), train.labels[fit_t], norm(images[val_t]), train.labels[val_t],
        norm(test.images.float() / 255.0), test.labels, classes=2, flip=True, fingerprint=train.fingerprint,
        class_names=CLASSES,
        preprocessing={"scale": 1 / 255, "mean": mean.reshape(3, 1, 1), "std": std.reshape(3, 1, 1),
                       "inputs": f"RGB pixels 0-255, N x 3 x {cfg.image_size} x {cfg.image_size}, resized with "
                                 f"antialiasing (torchvision.transforms.functional.resize)"},
    )
