"""Distinctiveness (Gedeon & Harris; SPEC §4.1): units whose activation vectors over the
training patterns point the same way (angle < cutoff) or opposite ways (> 180° − cutoff)."""

from __future__ import annotations

from typing import Literal

import torch

from prunerlib.config import TrialConfig
from prunerlib.models import UnitLayer
from prunerlib.pruners.base import PruneContext, Pruner, capture, register
from prunerlib.registry import Setting
from prunerlib.surgery import Removal, live_units

# A unit whose raw activation varies over the patterns by less than this share of its
# activation's output range is constant over the data (SPEC §4.1). Its angle to anything is
# undefined: centring leaves a saturated sigmoid's vector all +-0.5 (angle 0 to every other
# saturated unit), and min-max scaling stretches a near-dead ReLU's noise to full range. So
# it is never paired, and folding its mean into the next bias changes the next layer's input
# by at most this share times its outgoing weight.
CONSTANT_SPREAD = 1e-3
# Output ranges of the bounded activations; an unbounded one (ReLU) is measured against the
# largest activation any unit of the layer reaches over the patterns.
_RANGE = {"sigmoid": 1.0, "tanh": 2.0}


def constant_units(acts: torch.Tensor, kind: str) -> torch.Tensor:
    """(units,) bool: which columns of the raw (patterns, units) activations are constant."""
    acts = acts.double()
    spread = acts.max(0).values - acts.min(0).values
    scale = _RANGE.get(kind) or float(acts.abs().max().clamp_min(1e-12))
    return spread < CONSTANT_SPREAD * scale


def centred_activations(acts: torch.Tensor, kind: str) -> torch.Tensor:
    """(patterns, units) in float64, centred so angles span 0°-180°."""
    acts = acts.double()
    if kind != "sigmoid":  # other ranges: min-max scale each unit to [0, 1] first
        low, high = acts.min(0).values, acts.max(0).values
        acts = (acts - low) / (high - low).clamp_min(1e-12)
    return acts - 0.5


def angles(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise angles in degrees between the columns of `vectors` (float64)."""
    unit = vectors / vectors.norm(dim=0, keepdim=True)
    return torch.rad2deg(torch.arccos((unit.T @ unit).clamp(-1.0, 1.0)))


@register
class Distinctiveness(Pruner):
    name = "distinctiveness"
    label = "Distinctiveness"
    short = "dist"
    removes = "units_removed_frac"
    removed_what = "hidden units"
    settings = (
        Setting("angle_cutoff", float, 15.0, "units closer than this angle in degrees (or further than 180 - it) "
                "are alike; in (0, 90)", low=0, high=90, open_low=True, open_high=True, label="cutoff"),
        Setting("merge", Literal["none", "outgoing"], "none",
                "none | outgoing (add a removed unit's outgoing weights to its twin's)"),
        Setting("remove_constant", bool, False, "also remove units constant over the data (folded into the "
                "next layer's bias)"),
    )

    def __init__(self, cfg: TrialConfig):
        self.cutoff = cfg.angle_cutoff
        self.merge = cfg.merge == "outgoing"
        self.remove_constant = cfg.remove_constant

    def decide(self, ctx: PruneContext) -> Removal:
        removal = Removal()
        for layer in ctx.model.unit_layers:
            self._plan_layer(ctx, layer, removal)
        return removal

    def _plan_layer(self, ctx: PruneContext, layer: UnitLayer, removal: Removal) -> None:
        live = live_units(ctx.masks, layer)
        # In float64 once, for every measure below: converting it in each was a tenth of a decision.
        raw = capture(ctx.model, layer.activation, ctx.inputs).flatten(1)[:, live].double()
        constant = constant_units(raw, layer.kind)
        removed: set[int] = set()
        if self.remove_constant and constant.any():
            removal.constants[layer.incoming] = {
                int(live[i]): float(raw[:, i].mean()) for i in constant.nonzero().flatten()
            }
            removed.update(int(live[i]) for i in constant.nonzero().flatten())
        varying = (~constant).nonzero().flatten()
        # Scaled and centred without the constant units: a constant column's min-max scaling
        # would divide by its (near-)zero spread.
        theta = angles(centred_activations(raw[:, varying], layer.kind))
        out_w = dict(ctx.model.named_parameters())[f"{layer.outgoing}.weight"].detach().double().clone()
        i, j = torch.triu_indices(len(varying), len(varying), offset=1)
        a = theta[i, j]
        similar, opposite = a < self.cutoff, a > 180.0 - self.cutoff
        candidates = (similar | opposite).nonzero().flatten()
        # Most extreme pair first; a stable sort keeps ties in (i, j) order.
        # On the CPU, as triu_indices made i and j (a CUDA index into a CPU tensor is an error).
        order = candidates[torch.sort(torch.minimum(a, 180.0 - a)[candidates], stable=True).indices].cpu()
        # As plain ints: a tensor indexed element by element in this loop cost milliseconds a decision.
        first, second = live[varying[i[order]]].tolist(), live[varying[j[order]]].tolist()
        norms: dict[int, torch.Tensor] = {}  # a unit's outgoing norm, until a merge changes it

        def norm(unit: int) -> torch.Tensor:
            if unit not in norms:
                norms[unit] = out_w[:, unit].norm()
            return norms[unit]

        for u, v, apart in zip(first, second, opposite[order].tolist()):
            if u in removed or v in removed:
                continue
            if apart:
                removed.update((u, v))
                continue
            # Of two units doing the same job, drop the one the next layer listens to less.
            drop, keep = (u, v) if norm(u) < norm(v) else (v, u)
            if self.merge:
                removal.merges.append((layer.incoming, drop, keep))
                out_w[:, keep] += out_w[:, drop]
                norms.pop(keep, None)
            removed.add(drop)
        if removed:
            removal.units[layer.incoming] = sorted(removed)
