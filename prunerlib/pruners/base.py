"""What every pruner sees and returns, and the registry that names them.

A pruner is one small class: built from the trial config, with one method `plan` that looks
at the model (and, for activation criteria, the training inputs) and returns a `Removal`.
It never edits weights itself; `surgery.apply_removal` does that for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.masks import Masks
from prunerlib.surgery import Removal


@dataclass
class PruneContext:
    model: nn.Module
    masks: Masks
    inputs: torch.Tensor | None  # training patterns for activation-based criteria; set only while planning
    generator: torch.Generator  # seeded: every random choice of a trial comes from here
    # For a random control: the step the method it mirrors takes at this cycle on the method's
    # own trajectory (SPEC §4.4), set by the pipeline. None: plan the method on this model.
    reference: MethodStep | None = None


@dataclass
class MethodStep:
    """One pruning step of the method a random control mirrors: what it removed, and the
    masks it removed that from (so the control can count what the step took from each matrix)."""

    removal: Removal
    masks: Masks


class Pruner(Protocol):
    def plan(self, ctx: PruneContext) -> Removal: ...


PRUNERS: dict[str, Callable[[TrialConfig], Pruner]] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        PRUNERS[name] = cls
        return cls

    return add


@torch.no_grad()
def capture(model: nn.Module, module: str, inputs: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Outputs of submodule `module` over `inputs`, concatenated, in eval mode."""
    outputs: list[torch.Tensor] = []
    handle = model.get_submodule(module).register_forward_hook(lambda _m, _i, out: outputs.append(out))
    was_training = model.training
    model.eval()
    try:
        for chunk in inputs.split(batch):
            model(chunk)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(outputs)
