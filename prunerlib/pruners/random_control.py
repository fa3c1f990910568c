"""The `random` control (SPEC §4.4): remove as much as the mirrored method does, at random.

At each cycle it takes the step the method takes (`ctx.reference`, from the method's own
trajectory, which the pipeline runs beside the control from cycle 2 on) — or, where both start
from the same model, decides the method's step on this model — and removes as many units,
conv filters per layer, and entries of each weight matrix as that step did, chosen at random.
A matrix's count includes what the step's filters and units mask there, so a "Threshold
Model" control ends with as many of the hidden layer's weights masked as its method, not its
method's threshold count on top of its own random filters. Any registered pruner that is not a
control can be mirrored: what it removes is read from its `Removal`, not from its settings.
"""

from __future__ import annotations

import torch

from prunerlib import registry
from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.pruners.base import MethodStep, PruneContext, Pruner, register
from prunerlib.pruners.filters import FilterRanking
from prunerlib.surgery import Removal, masked


@register
class RandomControl(Pruner):
    name = "random"
    label = "random"
    short = "rand"
    control = True

    def __init__(self, cfg: TrialConfig):
        method = registry.PRUNERS[cfg.match]
        # The method's whole step: its own, then the companions (filter ranking) its trial adds.
        self.method = [method(cfg), *(c(cfg) for c in cfg.active_companions() if c is not method)]

    @classmethod
    def check(cls, cfg: TrialConfig) -> None:
        methods = [name for name, pruner in registry.PRUNERS.items() if not pruner.control]
        if cfg.match not in methods:
            raise ConfigError(f"match: a random control must name the pruner it mirrors "
                              f"({', '.join(methods)}), got {cfg.match!r}")
        registry.PRUNERS[cfg.match].check(cfg)

    def decide(self, ctx: PruneContext) -> Removal:
        step = ctx.reference or MethodStep(self._method_step(ctx), ctx.masks)
        target = step.removal
        # As many filters per conv layer as the step removes there, ranked by random scores.
        counts = tuple(len(target.filters.get(layer.conv, ())) for layer in ctx.model.filter_layers)
        removal = FilterRanking(counts, "random").decide(ctx) if any(counts) else Removal()
        for layer_name, units in target.units.items():
            live = ctx.masks[f"{layer_name}.bias"].nonzero().flatten().cpu()
            pick = torch.randperm(len(live), generator=ctx.generator)[: len(units)]
            removal.units[layer_name] = sorted(live[pick].tolist())
        if not target.weights:
            return removal
        taken_by_method = masked(ctx.model, step.masks, target)
        taken_here = masked(ctx.model, ctx.masks, removal)
        for name, where in target.weights.items():
            wanted = step.masks.kept(name) - taken_by_method.kept(name)
            already = ctx.masks.kept(name) - taken_here.kept(name)
            free = taken_here[name].cpu().flatten().nonzero().flatten()
            pick = free[torch.randperm(len(free), generator=ctx.generator)[: max(0, wanted - already)]]
            chosen = torch.zeros(where.numel(), dtype=torch.bool)
            chosen[pick] = True
            removal.weights[name] = chosen.view_as(where).to(where.device)
        return removal

    def _method_step(self, ctx: PruneContext) -> Removal:
        step = Removal()
        for pruner in self.method:
            step.extend(pruner.decide(ctx))
        return step
