"""Which result columns tell settings apart, pair a method with its controls, and each table
needs: derived from the pruner registry and the roles of TrialConfig's fields, so that a new
setting or pruner (a plugin's too) is grouped, paired and labelled with no edit here."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from prunerlib import config, registry
from prunerlib.records import schema

# A random control ranks filters at random: its criterion is 'random', not its method's, so it
# is the one pruner setting a control does not copy (SPEC §4.4).
CONTROL_OWN = ("filter_criterion",)
# The network and how it is trained (the seed aside: seeds are the repeats of one setting).
TRAINING_COLUMNS = tuple(c for c in config.columns_with_role("model", "pretraining", "optimiser", "stage")
                         if c != "seed")
# When and how often it is pruned and fine-tuned: the same for a method and the control that
# mirrors it, or the control would not remove as much.
SCHEDULE_COLUMNS = tuple(c for c in config.columns_with_role("pruning", "finetuning") if c not in ("pruner", "match"))
# A control pairs with a method trial when they share one pretrained model: the difference
# then isolates pruning. Fine-tuning epochs and cycles are left out on purpose: a none control
# may run them differently to reach the same total (checked by `finetune_budget`). The data's
# content, not its path: the same photos at another path pair.
PAIR_COLUMNS = tuple("data_fingerprint" if c == "data" else c for c in config.PRETRAIN_SETTINGS)

TABLE1_COLUMNS = ("attributes", "acc_pretrain", "angle_cutoff", "threshold_factor", "threshold_stat")
TABLE2_COLUMNS = ("attributes", "units_removed_frac", "weights_removed_frac", "angle_cutoff",
                  "threshold_factor", "threshold_stat")
TABLE3_COLUMNS = ("units_removed_frac", "weights_removed_frac", "filters_removed_frac", "angle_cutoff",
                  "threshold_factor", "threshold_stat", "filter_criterion", "filters_pruned", "filters_frac")


def foreign_columns(columns: Iterable[str]) -> tuple[str, ...]:
    """Result columns this prunerlib does not know: a plugin's settings, from a run that loaded
    it (the report need not load it: every result file keeps them)."""
    known = set(schema().names)
    return tuple(c for c in columns if c not in known)


def pruning_columns(df: pd.DataFrame | None = None) -> tuple[str, ...]:
    """Every pruner's settings: the registered pruners' in registration order, then `df`'s
    foreign columns."""
    return (*registry.settings(), *(foreign_columns(df.columns) if df is not None else ()))


def setting_columns(df: pd.DataFrame | None = None) -> tuple[str, ...]:
    """What tells one setting from another, besides data, pruner and seed."""
    return (*pruning_columns(df), *TRAINING_COLUMNS, *SCHEDULE_COLUMNS)


def mirrored_columns(df: pd.DataFrame | None = None) -> tuple[str, ...]:
    """What a random control copies from the method it mirrors (SPEC §4.4): the pruning settings
    and the schedule."""
    return (*(c for c in pruning_columns(df) if c not in CONTROL_OWN), *SCHEDULE_COLUMNS)
