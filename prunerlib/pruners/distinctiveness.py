"""Distinctiveness (Gedeon & Harris; SPEC §4.1): units whose activation vectors over the
training patterns point the same way (angle < cutoff) or opposite ways (> 180° − cutoff)."""

from __future__ import annotations

import torch

from prunerlib.config import TrialConfig
from prunerlib.models import UnitLayer
from prunerlib.pruners.base import PruneContext, capture, register
from prunerlib.surgery import Removal, live_units

# A unit whose centred activations stay this close to 0 (root-mean-square) is constant over
# the data: its angle to anything is undefined, so it is never paired.
CONSTANT_RMS = 1e-3


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


@register("distinctiveness")
class Distinctiveness:
    def __init__(self, cfg: TrialConfig):
        self.cutoff = cfg.angle_cutoff
        self.merge = cfg.merge == "outgoing"
        self.remove_constant = cfg.remove_constant

    def plan(self, ctx: PruneContext) -> Removal:
        removal = Removal()
        for layer in ctx.model.unit_layers:
            self._plan_layer(ctx, layer, removal)
        return removal

    def _plan_layer(self, ctx: PruneContext, layer: UnitLayer, removal: Removal) -> None:
        live = live_units(ctx.masks, layer)
        raw = capture(ctx.model, layer.activation, ctx.inputs).flatten(1)[:, live]
        vectors = centred_activations(raw, layer.kind)
        constant = vectors.pow(2).mean(0).sqrt() < CONSTANT_RMS
        removed: list[int] = []
        if self.remove_constant and constant.any():
            removal.constants[layer.incoming] = {
                int(live[i]): float(raw[:, i].double().mean()) for i in constant.nonzero().flatten()
            }
            removed += [int(live[i]) for i in constant.nonzero().flatten()]
        varying = (~constant).nonzero().flatten()
        theta = angles(vectors[:, varying])
        out_w = dict(ctx.model.named_parameters())[f"{layer.outgoing}.weight"].detach().double().clone()
        i, j = torch.triu_indices(len(varying), len(varying), offset=1)
        a = theta[i, j]
        similar, opposite = a < self.cutoff, a > 180.0 - self.cutoff
        candidates = (similar | opposite).nonzero().flatten()
        # Most extreme pair first; a stable sort keeps ties in (i, j) order.
        order = candidates[torch.sort(torch.minimum(a, 180.0 - a)[candidates], stable=True).indices]
        for pair in order.tolist():
            u, v = int(live[varying[i[pair]]]), int(live[varying[j[pair]]])
            if u in removed or v in removed:
                continue
            if opposite[pair]:
                removed += [u, v]
                continue
            # Of two units doing the same job, drop the one the next layer listens to less.
            drop, keep = (u, v) if out_w[:, u].norm() < out_w[:, v].norm() else (v, u)
            if self.merge:
                removal.merges.append((layer.incoming, drop, keep))
                out_w[:, keep] += out_w[:, drop]
            removed.append(drop)
        if removed:
            removal.units[layer.incoming] = sorted(removed)
