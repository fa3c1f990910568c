"""A pruner of your own, in one file: remove the hidden units whose incoming weights are smallest.

    prunerlib run --plugin examples/custom_pruner.py --pruner lowest_l2_units --units-frac 0.2
    prunerlib run --plugin examples/custom_pruner.py --pruner random --match lowest_l2_units --units-frac 0.2

or, in a sweep spec (paths relative to the spec file):

    plugins: [../examples/custom_pruner.py]
    grid:
      - {pruner: lowest_l2_units, units_frac: [0.1, 0.2, 0.4]}
      - {pruner: random, match: lowest_l2_units, units_frac: [0.1, 0.2, 0.4]}

The class below is all prunerlib needs: its attributes make `units_frac` a setting (checked
against its range, a `--units-frac` flag, a result column), label its rows in the summary and
the report, and say which removed share it reports; a random control mirrors it by removing as
many units as it does, at random. Like every pruner it only decides; `surgery` removes.
"""

import torch

from prunerlib.pruners import Pruner, PruneContext, Removal, Setting, live_units, register


@register
class LowestL2Units(Pruner):
    name = "lowest_l2_units"
    label = "Lowest-L2 units"
    short = "l2u"
    removes = "units_removed_frac"
    removed_what = "hidden units"
    settings = (
        Setting("units_frac", float, 0.2, "lowest_l2_units: share of the live hidden units removed per cycle, "
                "those whose incoming weight vectors have the smallest L2 norm",
                low=0, high=1, open_low=True, open_high=True, label="frac"),
    )

    def __init__(self, cfg):
        self.frac = cfg.units_frac

    def decide(self, ctx: PruneContext) -> Removal:
        removal = Removal()
        for layer in ctx.model.unit_layers:
            live = live_units(ctx.masks, layer)
            weight = ctx.model.get_submodule(layer.incoming).weight.detach()
            norms = weight[live].norm(dim=1)
            count = min(int(self.frac * len(live)), len(live) - 1)  # always leave a unit
            lowest = torch.sort(norms, stable=True).indices[:count]
            if count:
                removal.units[layer.incoming] = sorted(live[lowest].tolist())
        return removal
