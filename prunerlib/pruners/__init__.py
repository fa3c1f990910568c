"""Pruners, by name: each is one class in one module, registered with `@register` (see
`Pruner` for a complete example). What a pruner decides, `surgery` carries out."""

from prunerlib.config import TrialConfig
# Registration order is display order (the methods in the paper's order, then the controls).
from prunerlib.pruners import distinctiveness, threshold, filters, none, random_control  # noqa: F401,I001
from prunerlib.pruners.base import MethodStep, PruneContext, Pruner, capture, register
from prunerlib.pruners.filters import CRITERIA, FilterRanking
from prunerlib.registry import PRUNERS, Setting
from prunerlib.surgery import Removal, live_filters, live_units


def build_pruners(cfg: TrialConfig) -> list[Pruner]:
    """The trial's pruning step: its pruner, then the companions (filter ranking) it sets. A
    control builds what it needs itself: a random control draws its own filters."""
    pruner = PRUNERS[cfg.pruner]
    return [pruner(cfg), *(() if pruner.control else (c(cfg) for c in cfg.active_companions()))]


__all__ = ["CRITERIA", "PRUNERS", "FilterRanking", "MethodStep", "PruneContext", "Pruner", "Removal", "Setting",
           "build_pruners", "capture", "live_filters", "live_units", "register"]
