"""Conv filter ranking (paper §2.2; Li et al. 2017; Molchanov et al. 2016; SPEC §4.3).

Each criterion is one small class with one method: a score per output filter, where the
lowest-scoring filters are removed first.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch

from prunerlib.config import TrialConfig
from prunerlib.allocation import allocate
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

    def ranked(self, ctx: PruneContext, layer: FilterLayer) -> torch.Tensor:
        """The layer's live filters, lowest score (first to go) first."""
        live = live_filters(ctx.masks, layer).cpu()
        scores = self.criterion.scores(ctx, layer).cpu()[live]
        return live[torch.sort(scores, stable=True).indices]

    def decide(self, ctx: PruneContext) -> Removal:
        removal = Removal()
        for layer, count in zip(ctx.model.filter_layers, self.counts):
            count = min(count, len(live_filters(ctx.masks, layer)) - 1)
            if count > 0:  # a layer left alone is not scored: the random criterion draws nothing for it
                removal.filters[layer.conv] = sorted(self.ranked(ctx, layer)[:count].tolist())
        return removal


def filter_counts(cfg: TrialConfig) -> tuple[int, ...]:
    """Filters to remove per conv layer in one cycle; for `filters_pruned: auto`, the uniform
    split at `filters_frac`, whose total auto spreads differently (`Filters.decide`)."""
    widths = cfg.conv_channels
    if cfg.filters_frac is not None:
        return tuple(int(round(cfg.filters_frac * w)) for w in widths)
    if cfg.filters_pruned is None or cfg.filters_pruned == AUTO:
        return tuple(0 for _ in widths)
    if isinstance(cfg.filters_pruned, int):
        return tuple(cfg.filters_pruned for _ in widths)
    if len(cfg.filters_pruned) != len(widths):
        raise ConfigError(f"filters_pruned: give one count or one per conv layer ({len(widths)}), "
                          f"got {list(cfg.filters_pruned)}")
    return tuple(cfg.filters_pruned)


AUTO = "auto"


@register
class Filters(FilterRanking, Pruner):
    """Filter ranking as a pruner of its own (`pruner: filters`), or as a companion step beside
    a linear-layer pruner on the CNN (the paper's "Dist. Model" and "Threshold Model"): setting
    filters_pruned or filters_frac adds it to any pruner's trial.

    With `filters_pruned: auto`, each cycle removes as many filters in all as the uniform split
    at `filters_frac` does, spread over the conv layers by their validation-loss sensitivity
    on the model being pruned (`prunerlib.allocation`)."""

    name = "filters"
    label = "Filters only"
    short = "filt"
    removes = "filters_removed_frac"
    removed_what = "conv filters"
    settings = (
        Setting("filter_criterion", Literal["l1", "mean_activation", "apoz", "random"], "l1",
                "conv filter ranking: l1 | mean_activation | apoz | random", label="criterion"),
        Setting("filters_pruned", int | tuple[int, ...] | Literal["auto"] | None, None,
                "conv filters removed per layer and cycle (one count, or one per layer), or auto: "
                "filters_frac of all conv filters, split by validation-loss sensitivity", label="filters"),
        Setting("filters_frac", float | None, None, "share of each conv layer's filters removed per cycle "
                "(with filters_pruned auto: share of all conv filters)",
                low=0, high=1, open_high=True, label="frac"),
    )
    models = ("cnn",)
    companion = True
    follows_trajectory = False  # fixed counts; auto's depend on the model: see `follows`

    def __init__(self, cfg: TrialConfig):
        super().__init__(filter_counts(cfg), cfg.filter_criterion)
        self.auto = cfg.filters_pruned == AUTO

    def decide(self, ctx: PruneContext) -> Removal:
        if not self.auto:
            return super().decide(ctx)
        if ctx.validation is None:
            raise ValueError("filters_pruned: auto decides on validation data, and this PruneContext has none "
                             "(set its `validation` to (x, y) while deciding)")
        layers = [layer for layer in ctx.model.filter_layers if len(live_filters(ctx.masks, layer)) > 1]
        rankings = [(layer, self.ranked(ctx, layer)) for layer in layers]
        counts = allocate(ctx.model, rankings, ctx.validation, sum(self.counts))
        return Removal(filters={layer.conv: sorted(ranked[:k].tolist())
                                for (layer, ranked), k in zip(rankings, counts) if k})

    @classmethod
    def follows(cls, cfg: TrialConfig) -> bool:
        return cfg.filters_pruned == AUTO

    @classmethod
    def active(cls, cfg: TrialConfig) -> bool:
        return cfg.filters_pruned is not None or cfg.filters_frac is not None

    @classmethod
    def check(cls, cfg: TrialConfig) -> None:
        if cfg.model == "ffn" and cls.active(cfg):
            raise ConfigError("filters_pruned: the FFN has no conv filters; filter pruning needs the CNN")
        if cfg.filters_pruned == AUTO and cfg.filters_frac is None:
            raise ConfigError("filters_pruned: auto needs filters_frac (the share of all conv filters removed per "
                              "cycle, e.g. filters_frac: 0.5)")
        if cfg.filters_pruned not in (None, AUTO) and cfg.filters_frac is not None:
            raise ConfigError("filters_frac: give filters_pruned or filters_frac, not both (or filters_pruned: auto "
                              "to split filters_frac of all filters by sensitivity)")
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
                "filters_pruned": cls._counts(cfg), "filters_frac": cfg.filters_frac}

    @classmethod
    def describe(cls, cfg: TrialConfig) -> list[str]:
        return [f"filters={cfg.filter_criterion}:" + cls._counts(cfg).removesuffix(f":{cfg.filter_criterion}")]

    @classmethod
    def tag(cls, cfg: TrialConfig) -> str:
        return f" {cfg.filter_criterion[:3]}:" + cls._counts(cfg).split(":")[0].replace(",", "/")

    @staticmethod
    def _counts(cfg: TrialConfig) -> str:
        """The per-layer counts, 'a,b'; auto's are decided cycle by cycle (a row's `filters_removed`
        has them), and follow its criterion's curves: 'auto:l1' — so a random control, whose own
        criterion is 'random', still says (and pairs by) which method's counts it copies."""
        if cfg.filters_pruned == AUTO:
            return f"{AUTO}:{cfg.filter_criterion}"
        return ",".join(map(str, filter_counts(cfg)))
