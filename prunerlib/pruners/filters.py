"""Conv filter ranking (paper §2.2; Li et al. 2017; Molchanov et al. 2016; SPEC §4.3).

Each criterion is one small class with one method: a score per output filter, where the
lowest-scoring filters are removed first.
"""

from __future__ import annotations

from typing import Protocol

import torch

from prunerlib.models import FilterLayer
from prunerlib.pruners.base import PruneContext, capture
from prunerlib.surgery import Removal, live_filters


class Criterion(Protocol):
    def scores(self, ctx: PruneContext, layer: FilterLayer) -> torch.Tensor: ...


class L1:
    """Sum of |weights| of the filter: the paper's default."""

    def scores(self, ctx: PruneContext, layer: FilterLayer) -> torch.Tensor:
        return ctx.model.get_submodule(layer.conv).weight.detach().abs().sum((1, 2, 3))


class MeanActivation:
    """Mean post-ReLU activation over the training inputs."""

    def scores(self, ctx: PruneContext, layer: FilterLayer) -> torch.Tensor:
        return capture(ctx.model, layer.activation, ctx.inputs).mean((0, 2, 3))


class APoZ:
    """Average percentage of zeros after the ReLU; a filter that is mostly off goes first."""

    def scores(self, ctx: PruneContext, layer: FilterLayer) -> torch.Tensor:
        return -(capture(ctx.model, layer.activation, ctx.inputs) == 0).double().mean((0, 2, 3))


class RandomScore:
    """The control: filters chosen at random (seeded)."""

    def scores(self, ctx: PruneContext, layer: FilterLayer) -> torch.Tensor:
        width = ctx.model.get_submodule(layer.conv).out_channels
        return torch.rand(width, generator=ctx.generator)


CRITERIA: dict[str, Criterion] = {
    "l1": L1(), "mean_activation": MeanActivation(), "apoz": APoZ(), "random": RandomScore(),
}


class FilterRanking:
    """Removes `counts[k]` more of the lowest-scoring live filters of conv layer k per cycle,
    always leaving at least one."""

    def __init__(self, counts: tuple[int, ...], criterion: str):
        self.counts = counts
        self.criterion = CRITERIA[criterion]

    def plan(self, ctx: PruneContext) -> Removal:
        removal = Removal()
        for layer, count in zip(ctx.model.filter_layers, self.counts):
            live = live_filters(ctx.masks, layer)
            count = min(count, len(live) - 1)
            if count <= 0:
                continue
            scores = self.criterion.scores(ctx, layer).cpu()[live.cpu()]
            lowest = torch.sort(scores, stable=True).indices[:count]
            removal.filters[layer.conv] = sorted(live.cpu()[lowest].tolist())
        return removal
