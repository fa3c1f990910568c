"""Magnitude threshold (Han et al. 2015; SPEC §4.2): mask |w| < factor × stat, over the live
weights, stat = mean(|w|) (`mean_abs`, the paper) or std(w) of the signed weights (`std`)."""

from __future__ import annotations

from typing import Literal

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.metrics import weight_scope
from prunerlib.pruners.base import PruneContext, Pruner, register
from prunerlib.registry import Setting
from prunerlib.surgery import Removal


@register
class Threshold(Pruner):
    name = "threshold"
    label = "Threshold"
    short = "thr"
    removes = "weights_removed_frac"
    removed_what = "incoming weights of the hidden layer"
    settings = (
        Setting("threshold_factor", float, 1.0, "mask |w| < factor × stat of the live weights", low=0, open_low=True,
                label="factor"),
        Setting("threshold_stat", Literal["mean_abs", "std"], "mean_abs",
                "mean_abs (mean of |w|, the paper) | std (of the signed weights, Han et al.)"),
        Setting("threshold_layers", str | tuple[str, ...], "hidden",
                "hidden | all_linear | a layer name, or a list of them (also what weights_removed_frac counts)"),
    )

    def __init__(self, cfg: TrialConfig):
        self.factor = cfg.threshold_factor
        self.stat = cfg.threshold_stat
        self.scope = cfg.threshold_layers

    @classmethod
    def check(cls, cfg: TrialConfig) -> None:
        if isinstance(cfg.threshold_layers, tuple) and not cfg.threshold_layers:
            raise ConfigError("threshold_layers: give 'hidden', 'all_linear' or a list of layer names")

    def decide(self, ctx: PruneContext) -> Removal:
        params = dict(ctx.model.named_parameters())
        removal = Removal()
        for name in weight_scope(ctx.model, self.scope):
            kept = ctx.masks[name]
            w = params[name].detach()
            alive = w[kept]
            if alive.numel() == 0:
                continue
            # Han et al. quote the std of the weights; the paper uses the mean magnitude.
            stat = alive.abs().mean() if self.stat == "mean_abs" else alive.std()
            removal.weights[name] = kept & (w.abs() < self.factor * stat)
        return removal
