"""Magnitude threshold (Han et al. 2015; SPEC §4.2): mask |w| < factor × stat, over the live
weights, stat = mean(|w|) (`mean_abs`, the paper) or std(w) of the signed weights (`std`)."""

from __future__ import annotations

from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.pruners.base import PruneContext, register
from prunerlib.surgery import Removal


def threshold_params(model: nn.Module, scope: str | tuple[str, ...]) -> list[str]:
    """Weight matrices in scope: 'hidden' (into the hidden units), 'all_linear', or names."""
    if scope == "hidden":
        return [f"{layer.incoming}.weight" for layer in model.unit_layers]
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if scope == "all_linear":
        return [f"{name}.weight" for name in linear]
    names = (scope,) if isinstance(scope, str) else scope
    unknown = [n for n in names if n not in linear]
    if unknown:
        raise ConfigError(f"threshold_layers: {unknown[0]!r} is not a linear layer (choose from {', '.join(linear)})")
    return [f"{name}.weight" for name in names]


@register("threshold")
class Threshold:
    def __init__(self, cfg: TrialConfig):
        self.factor = cfg.threshold_factor
        self.stat = cfg.threshold_stat
        self.scope = cfg.threshold_layers

    def plan(self, ctx: PruneContext) -> Removal:
        params = dict(ctx.model.named_parameters())
        removal = Removal()
        for name in threshold_params(ctx.model, self.scope):
            kept = ctx.masks[name]
            w = params[name].detach()
            alive = w[kept]
            if alive.numel() == 0:
                continue
            # Han et al. quote the std of the weights; the paper uses the mean magnitude.
            stat = alive.abs().mean() if self.stat == "mean_abs" else alive.std()
            removal.weights[name] = kept & (w.abs() < self.factor * stat)
        return removal
