"""The paper's networks (SPEC §3) and the structure pruners need to know about them.

A model declares its prunable structure as `UnitLayer`s (hidden units between two linear
layers) and `FilterLayer`s (conv filters and the layer that consumes them). Pruners and
surgery work from these declarations only, so a new architecture needs no pruner changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunerlib.config import TrialConfig

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass(frozen=True)
class UnitLayer:
    """Hidden units: rows of `incoming`, columns of `outgoing`, outputs of `activation`."""

    incoming: str
    activation: str
    outgoing: str
    kind: str  # activation name: decides how distinctiveness centres the activations


@dataclass(frozen=True)
class FilterLayer:
    """Output filters of `conv`; `consumer` reads `per_channel` inputs per filter."""

    conv: str
    activation: str
    consumer: str
    per_channel: int


class FFN(nn.Module):
    """in → hidden → classes, one activation on the hidden layer (paper §2.1)."""

    def __init__(self, in_features: int, hidden: int = 50, classes: int = 3, activation: str = "sigmoid"):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(hidden, classes)
        self.unit_layers = (UnitLayer("fc1", "act", "fc2", activation),)
        self.filter_layers: tuple[FilterLayer, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CNN(nn.Module):
    """conv5×5 → ReLU → pool2 → conv5×5 → ReLU → pool2 → hidden → classes (SPEC §3)."""

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 128, classes: int = 2,
                 image_size: int = 32, activation: str = "sigmoid"):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(3, c1, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for two 5×5 convs and pools")
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(hidden, classes)
        self.unit_layers = (UnitLayer("fc1", "act", "fc2", activation),)
        self.filter_layers = (
            FilterLayer("conv1", "relu1", "conv2", 1),
            FilterLayer("conv2", "relu2", "fc1", side * side),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.act(self.fc1(torch.flatten(x, 1))))


def build_model(cfg: TrialConfig, in_features: int, classes: int) -> nn.Module:
    """A freshly initialised model, seeded by the trial seed."""
    torch.manual_seed(cfg.seed)
    if cfg.model == "ffn":
        return FFN(in_features, cfg.hidden, classes, cfg.activation)
    c1, c2 = cfg.conv_channels
    return CNN((c1, c2), cfg.hidden, classes, cfg.image_size, cfg.activation)
