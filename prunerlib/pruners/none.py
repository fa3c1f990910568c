"""The `none` control: prunes nothing and is trained for the same total epochs."""

from prunerlib.config import TrialConfig
from prunerlib.pruners.base import PruneContext, register
from prunerlib.surgery import Removal


@register("none")
class NoPruning:
    def __init__(self, cfg: TrialConfig):
        pass

    def plan(self, ctx: PruneContext) -> Removal:
        return Removal()
