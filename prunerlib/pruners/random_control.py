"""The `random` control (SPEC §4.4): remove as much as the mirrored method does, at random.

At each cycle it takes the step the method takes (`ctx.reference`, from the method's own
trajectory, which the pipeline runs beside the control from cycle 2 on) — or, where both start
from the same model, plans the method's step on this model — and removes as many units
(distinctiveness), conv filters per layer, and entries of each weight matrix (threshold) as
that step did, chosen at random. A matrix's count includes what the step's filters and units
mask there, so a "Threshold Model" control ends with as many of the hidden layer's weights
masked as its method, not its method's threshold count on top of its own random filters.
"""

from __future__ import annotations

import torch

from prunerlib.config import TrialConfig
from prunerlib.pruners.base import PRUNERS, MethodStep, PruneContext, register
from prunerlib.pruners.filters import FilterRanking
from prunerlib.surgery import Removal, masked


@register("random")
class RandomControl:
    def __init__(self, cfg: TrialConfig):
        counts = cfg.filter_counts() if cfg.prunes_filters else None
        self.method = [PRUNERS[cfg.match](cfg)] if cfg.match in ("distinctiveness", "threshold") else []
        if counts:
            self.method.append(FilterRanking(counts, cfg.filter_criterion))
        self.filters = FilterRanking(counts, "random") if counts else None

    def plan(self, ctx: PruneContext) -> Removal:
        step = ctx.reference or MethodStep(self._method_step(ctx), ctx.masks)
        target = step.removal
        removal = self.filters.plan(ctx) if self.filters else Removal()
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
            step.extend(pruner.plan(ctx))
        return step
