"""The `random` control (SPEC §4.4): remove as much as the mirrored pruner would, at random.

It takes what the mirrored method removes at this cycle (`ctx.reference`, from the method's
own trajectory, which the pipeline runs beside the control from cycle 2 on) — or, at cycle 1,
where both start from the same pretrained model, asks the method about this model — and
removes the same number of units (distinctiveness) or weights per matrix (threshold) chosen at
random. Filter counts are fixed by the settings, so the pipeline just ranks filters by the
`random` criterion.
"""

from __future__ import annotations

import torch

from prunerlib.config import TrialConfig
from prunerlib.pruners.base import PRUNERS, PruneContext, register
from prunerlib.surgery import Removal


@register("random")
class RandomControl:
    def __init__(self, cfg: TrialConfig):
        # A random control mirroring `filters` removes no linear-layer units.
        self.mirrored = PRUNERS["none" if cfg.match == "filters" else cfg.match](cfg)

    def plan(self, ctx: PruneContext) -> Removal:
        target = ctx.reference if ctx.reference is not None else self.mirrored.plan(ctx)
        removal = Removal()
        for layer_name, units in target.units.items():
            live = ctx.masks[f"{layer_name}.bias"].nonzero().flatten().cpu()
            pick = torch.randperm(len(live), generator=ctx.generator)[: len(units)]
            removal.units[layer_name] = sorted(live[pick].tolist())
        for name, where in target.weights.items():
            kept = ctx.masks[name].cpu().flatten().nonzero().flatten()
            pick = kept[torch.randperm(len(kept), generator=ctx.generator)[: int(where.sum())]]
            chosen = torch.zeros(where.numel(), dtype=torch.bool)
            chosen[pick] = True
            removal.weights[name] = chosen.view_as(where).to(where.device)
        return removal
