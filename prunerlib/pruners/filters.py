"""Conv filter ranking (paper §2.2; Li et al. 2017; Molchanov et al. 2016; SPEC §4.3).

Each criterion is one small class with one method: a score per output filter, where the
lowest-scoring filters are removed first.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.models import FilterLayer
from prunerlib.pruners.base import PruneContext, Pruner, capture, register
from prunerlib.registry import Setting
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

    def decide(self, ctx: PruneContext) -> Removal:
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


def filter_counts(cfg: TrialConfig) -> tuple[int, ...]:
    """Filters to remove per conv layer in one cycle."""
    widths = cfg.conv_channels
    if cfg.filters_frac is not None:
        return tuple(int(round(cfg.filters_frac * w)) for w in widths)
    if cfg.filters_pruned is None:
        return tuple(0 for _ in widths)
    if isinstance(cfg.filters_pruned, int):
        return tuple(cfg.filters_pruned for _ in widths)
    if len(cfg.filters_pruned) != len(widths):
        raise ConfigError(f"filters_pruned: give one count or one per conv layer ({len(widths)}), "
                          f"got {list(cfg.filters_pruned)}")
    return tuple(cfg.filters_pruned)


@register
class Filters(FilterRanking, Pruner):
    """Filter ranking as a pruner of its own (`pruner: filters`), or as a companion step beside
    a linear-layer pruner on the CNN (the paper's "Dist. Model" and "Threshold Model"): setting
    filters_pruned or filters_frac adds it to any pruner's trial."""

    name = "filters"
    label = "Filters only"
    short = "filt"
    removes = "filters_removed_frac"
    removed_what = "conv filters"
    settings = (
        Setting("filter_criterion", Literal["l1", "mean_activation", "apoz", "random"], "l1",
                "conv filter ranking: l1 | mean_activation | apoz | random", label="criterion"),
        Setting("filters_pruned", int | tuple[int, ...] | None, None,
                "conv filters removed per layer and cycle (one count, or one per layer)", label="filters"),
        Setting("filters_frac", float | None, None, "share of each conv layer's filters removed per cycle",
                low=0, high=1, open_high=True, label="frac"),
    )
    models = ("cnn",)
    companion = True
    follows_trajectory = False  # its counts are fixed by its settings

    def __init__(self, cfg: TrialConfig):
        super().__init__(filter_counts(cfg), cfg.filter_criterion)

    @classmethod
    def active(cls, cfg: TrialConfig) -> bool:
        return cfg.filters_pruned is not None or cfg.filters_frac is not None

    @classmethod
    def check(cls, cfg: TrialConfig) -> None:
        if cfg.model == "ffn" and cls.active(cfg):
            raise ConfigError("filters_pruned: the FFN has no conv filters; filter pruning needs the CNN")
        if cfg.filters_pruned is not None and cfg.filters_frac is not None:
            raise ConfigError("filters_frac: give filters_pruned or filters_frac, not both")
        if not cls.active(cfg):
            who = "pruner 'filters'" if cfg.pruner == cls.name else f"random matching '{cls.name}'"
            raise ConfigError(f"filters_pruned: {who} needs filters_pruned or filters_frac")
        if cfg.pruner == "none":
            raise ConfigError("filters_pruned: the none control prunes nothing; use pruner 'filters' "
                              "for filter ranking alone")
        for layer, (count, width) in enumerate(zip(filter_counts(cfg), cfg.conv_channels)):
            if not 0 <= count < width:
                raise ConfigError(f"filters_pruned: conv{layer + 1} has {width} filters; "
                                  f"pruning {count!r} must leave at least one (0..{width - 1})")

    @classmethod
    def columns(cls, cfg: TrialConfig) -> dict[str, Any]:
        return {"filter_criterion": "random" if cfg.pruner == "random" else cfg.filter_criterion,
                "filters_pruned": ",".join(map(str, filter_counts(cfg))), "filters_frac": cfg.filters_frac}

    @classmethod
    def describe(cls, cfg: TrialConfig) -> list[str]:
        return [f"filters={cfg.filter_criterion}:" + ",".join(map(str, filter_counts(cfg)))]

    @classmethod
    def tag(cls, cfg: TrialConfig) -> str:
        return f" {cfg.filter_criterion[:3]}:" + "/".join(map(str, filter_counts(cfg)))
