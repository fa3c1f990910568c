"""The `none` control: prunes nothing and is trained for the same total epochs."""

from prunerlib.pruners.base import PruneContext, Pruner, register
from prunerlib.surgery import Removal


@register
class NoPruning(Pruner):
    name = "none"
    label = "none"
    short = "none"
    control = True

    def decide(self, ctx: PruneContext) -> Removal:
        return Removal()
