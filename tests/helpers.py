"""Small builders shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.masks import Masks
from prunerlib.models import CNN, FFN
from prunerlib.pruners import PruneContext


def ffn_config(**settings: Any) -> TrialConfig:
    """A Waveform trial small enough for a unit test (seconds, not minutes)."""
    return TrialConfig.from_dict({"n": 600, "epochs_pretrain": 4, "epochs_finetune": 2, "patience": 2, **settings})


def random_data(n: int = 256, features: int = 8, classes: int = 3, seed: int = 0, image: bool = False) -> Data:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, 32, 32) if image else (n, features)
    x, y = torch.randn(shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    return Data(x, y, x[:64], y[:64], x[:64], y[:64], classes=classes, flip=image)


def context(model: torch.nn.Module, inputs: torch.Tensor, seed: int = 0) -> PruneContext:
    return PruneContext(model, Masks(model), inputs, torch.Generator().manual_seed(seed))


def small_ffn(in_features: int = 8, hidden: int = 6, seed: int = 0) -> FFN:
    torch.manual_seed(seed)
    return FFN(in_features, hidden, 3)


def small_cnn(seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    return CNN((6, 8), hidden=10, classes=2)


@contextmanager
def registry_without(name: str) -> Iterator[None]:
    """The pruner registry with pruner `name` (and its settings) set aside, all of it restored
    after: what a process that never loaded that plugin sees."""
    from prunerlib import registry

    saved = [dict(registry.PRUNERS), dict(registry._OWNER), dict(registry._SETTINGS), set(registry._BUILTIN)]
    registry.PRUNERS.pop(name, None)
    for setting in [s for s, owner in registry._OWNER.items() if owner == name]:
        del registry._OWNER[setting], registry._SETTINGS[setting]
    try:
        yield
    finally:
        for live, before in zip((registry.PRUNERS, registry._OWNER, registry._SETTINGS, registry._BUILTIN), saved):
            live.clear()
            live.update(before)
