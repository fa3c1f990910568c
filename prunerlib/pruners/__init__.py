"""Pruners, by name. Adding one: a module with a class that has `plan(ctx) -> Removal`,
decorated with `@register("name")`, imported here."""

from prunerlib.config import TrialConfig
from prunerlib.pruners import distinctiveness, none, random_control, threshold  # noqa: F401  (registers)
from prunerlib.pruners.base import PRUNERS, MethodStep, PruneContext, Pruner, capture, register
from prunerlib.pruners.filters import CRITERIA, FilterRanking


def build_pruners(cfg: TrialConfig) -> list[Pruner]:
    """The trial's pruning step: a linear-layer pruner, plus filter ranking when asked."""
    pruners = [PRUNERS[cfg.linear_pruner](cfg)]
    if cfg.prunes_filters and cfg.pruner != "random":  # a random control draws its own filters
        pruners.append(FilterRanking(cfg.filter_counts(), cfg.filter_criterion))
    return pruners


__all__ = ["CRITERIA", "PRUNERS", "FilterRanking", "MethodStep", "PruneContext", "Pruner", "build_pruners", "capture", "register"]
