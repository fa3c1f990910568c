"""What every pruner is, sees and returns, and `register`, which makes one known everywhere.

A pruner is one small class in one file: built from the trial config, with one method
`decide` that looks at the model (and, for activation criteria, the training inputs) and
returns a `Removal`. It never edits weights itself; `surgery.apply_removal` does that for all
of them. Its class attributes are its registry entry: everything else in prunerlib (the
config's settings, the command-line flags, sweep specs, result columns, labels, the report)
is derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from prunerlib import registry
from prunerlib.config import TrialConfig, column_value
from prunerlib.masks import Masks
from prunerlib.registry import Setting
from prunerlib.surgery import Removal


@dataclass
class PruneContext:
    model: nn.Module
    masks: Masks
    inputs: torch.Tensor | None  # training patterns for activation-based criteria; set only while deciding
    generator: torch.Generator  # seeded: every random choice of a trial comes from here
    # For a random control: the step the method it mirrors takes at this cycle on the method's
    # own trajectory (SPEC §4.4), set by the pipeline. None: decide the method on this model.
    reference: MethodStep | None = None
    # (x, y) of the validation split, for a pruner that measures what a removal costs before
    # choosing it (filters_pruned: auto); set only while deciding. Never the test split.
    validation: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class MethodStep:
    """One pruning step of the method a random control mirrors: what it removed, and the
    masks it removed that from (so the control can count what the step took from each matrix)."""

    removal: Removal
    masks: Masks


class Pruner:
    """A pruning criterion. Subclass it, fill in the class attributes, write `decide`, and
    decorate the class with `@register`. A complete pruner, in a file of its own (loaded with
    `prunerlib run --plugin this.py ...` or a sweep spec's `plugins: [this.py]`)::

        import torch

        from prunerlib.pruners import Pruner, Removal, Setting, live_units, register


        @register
        class LowestL2Units(Pruner):
            name = "lowest_l2_units"          # --pruner lowest_l2_units, and the rows' `pruner`
            label = "Lowest-L2 units"         # tables and figures
            short = "l2u"                     # Tune's 20-character trial names
            removes = "units_removed_frac"    # the removed share the summary and report show
            removed_what = "hidden units"
            settings = (Setting("units_frac", float, 0.2, "share of live hidden units removed per cycle",
                                low=0, high=1, open_low=True, open_high=True, label="frac"),)

            def __init__(self, cfg):
                self.frac = cfg.units_frac

            def decide(self, ctx):
                removal = Removal()
                for layer in ctx.model.unit_layers:
                    live = live_units(ctx.masks, layer)
                    weight = ctx.model.get_submodule(layer.incoming).weight.detach()
                    norms = weight[live].norm(dim=1)
                    lowest = torch.sort(norms, stable=True).indices[: int(self.frac * len(live))]
                    removal.units[layer.incoming] = sorted(live[lowest].tolist())
                return removal

    After that, `units_frac` is a setting like any other: `--units-frac 0.2` or
    `--set units_frac=0.2`, a key a sweep spec may grid or search over, a result column, and
    `--pruner random --match lowest_l2_units` runs its random control.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    short: ClassVar[str]
    # The removed share it reports (one of registry.REMOVED_COLUMNS; None prunes nothing).
    removes: ClassVar[str | None] = None
    removed_what: ClassVar[str] = ""
    settings: ClassVar[tuple[Setting, ...]] = ()
    models: ClassVar[tuple[str, ...]] = ("ffn", "cnn")  # the models it can prune
    # Its settings may be set beside another pruner's, adding its step (conv filter ranking).
    companion: ClassVar[bool] = False
    # A control (random, none): shown after the methods, and never a random control's `match`.
    control: ClassVar[bool] = False
    # Its step at cycle k depends on the model it is given, so a random control mirroring it
    # over several cycles runs the method's own trajectory beside it (SPEC §4.4). False for a
    # pruner whose counts its settings fix (filter ranking).
    follows_trajectory: ClassVar[bool] = True

    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg

    def decide(self, ctx: PruneContext) -> Removal:
        raise NotImplementedError

    @classmethod
    def follows(cls, cfg: TrialConfig) -> bool:
        """`follows_trajectory` in this trial: a pruner whose settings decide it overrides this."""
        return cls.follows_trajectory

    # --- derived from the class attributes; override only for a setting that needs it ------
    @classmethod
    def active(cls, cfg: TrialConfig) -> bool:
        """Whether its step runs in this trial (a companion: when one of its settings is set)."""
        return cfg.pruner == cls.name

    @classmethod
    def check(cls, cfg: TrialConfig) -> None:
        """Rules across settings, as ConfigError('setting: what is wrong and what to do')."""

    @classmethod
    def columns(cls, cfg: TrialConfig) -> dict[str, Any]:
        """Its settings as result columns, for a trial it (or a control mirroring it) runs in."""
        return {s.name: column_value(getattr(cfg, s.name)) for s in cls.settings}

    @classmethod
    def describe(cls, cfg: TrialConfig) -> list[str]:
        """The settings that tell this trial apart, as 'label=value' (the plan, the summary)."""
        return [f"{s.label}={_show(getattr(cfg, s.name))}" for s in cls.settings if s.label]

    @classmethod
    def tag(cls, cfg: TrialConfig) -> str:
        """The same, squeezed for Tune's 20-character columns: 'dist15'."""
        return "".join(_show(getattr(cfg, s.name)) for s in cls.settings if s.label)


def register(cls: type[Pruner]) -> type[Pruner]:
    """Make a Pruner subclass known by its `name`: to TrialConfig, the command line, sweep
    specs, the result columns and the report."""
    if not (isinstance(cls, type) and issubclass(cls, Pruner)):
        raise TypeError(f"register: {cls!r} is not a subclass of prunerlib.pruners.Pruner")
    for attribute in ("name", "label", "short"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise TypeError(f"{cls.__qualname__}.{attribute}: every pruner needs one (a string)")
    return registry.add(cls)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@torch.no_grad()
def capture(model: nn.Module, module: str, inputs: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Outputs of submodule `module` over `inputs`, concatenated, in eval mode."""
    outputs: list[torch.Tensor] = []
    handle = model.get_submodule(module).register_forward_hook(lambda _m, _i, out: outputs.append(out))
    was_training = model.training
    model.eval()
    try:
        for chunk in inputs.split(batch):
            model(chunk)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(outputs)
