"""Pairing each method trial with its `none` and `random` controls (the same data, seed, network
and pretraining), and the paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from prunerlib.analysis.columns import PAIR_COLUMNS, mirrored_columns
from prunerlib.analysis.rows import column, finetune_budget, row_key


@dataclass(frozen=True)
class Pair:
    method: pd.Series  # the method trial's final row
    controls: pd.DataFrame  # its control trials (several when the control was run more than once)
    same_budget: bool | None  # None: fine-tuning epochs not recorded


def pair(method: pd.DataFrame, control: pd.DataFrame) -> list[Pair]:
    """Each method trial with the control trials sharing its data, seed, network and
    pretraining (PAIR_COLUMNS); among those, the ones with the same fine-tuning budget when
    any has it. Method trials without a control are left out."""
    control_keys, control_budget = row_key(control, PAIR_COLUMNS), finetune_budget(control)
    pairs = []
    for (_, row), key, budget in zip(method.iterrows(), row_key(method, PAIR_COLUMNS), finetune_budget(method)):
        candidates = control[control_keys == key]
        if candidates.empty:
            continue
        if math.isnan(budget):
            pairs.append(Pair(row, candidates, None))
            continue
        same = candidates[control_budget[candidates.index] == budget]
        pairs.append(Pair(row, same if not same.empty else candidates, not same.empty))
    return pairs


def paired_differences(pairs: Sequence[Pair], value: str = "acc_finetuned") -> pd.DataFrame:
    """Per pair: the method's value, its controls' mean value and method − control, in
    percent / percentage points."""
    records = [{
        "seed": p.method["seed"],
        "method": 100 * float(p.method[value]),
        "control": 100 * float(p.controls[value].mean()),
        "same_budget": p.same_budget,
    } for p in pairs]
    frame = pd.DataFrame(records, columns=["seed", "method", "control", "same_budget"])
    frame["diff"] = frame["method"] - frame["control"]
    return frame


def within_differences(rows: pd.DataFrame) -> pd.Series:
    """Fine-tuned minus pretrained accuracy of each trial (pp): the paper's own comparison."""
    return 100 * (rows["acc_finetuned"].astype(float) - rows["acc_pretrain"].astype(float))


def none_controls(ok: pd.DataFrame) -> pd.DataFrame:
    return ok[ok["pruner"].eq("none")]


def random_controls(ok: pd.DataFrame, method: pd.DataFrame) -> pd.DataFrame:
    """Random trials mirroring these method trials: `match` is their pruner and every mirrored
    setting (cutoff, factor, filter counts, cycles) is equal."""
    if method.empty:
        return method
    randoms = ok[ok["pruner"].eq("random") & column(ok, "match").isin(method["pruner"].unique())]
    mirrored = ("pruner", *mirrored_columns(ok))
    settings = set(row_key(method, mirrored))
    randoms_as = randoms.assign(pruner=column(randoms, "match"))
    return randoms[row_key(randoms_as, mirrored).isin(settings)]


def _paired_rows(pairs: Sequence[Pair]) -> pd.DataFrame:
    frames = [p.controls for p in pairs]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames)
    return rows[~rows.index.duplicated()]


@dataclass(frozen=True)
class Arms:
    """The control trials paired with a method's trials (the same seeds, data and training)."""

    none: list[Pair]
    random: list[Pair]

    @classmethod
    def of(cls, ok: pd.DataFrame, method: pd.DataFrame) -> Arms:
        return cls(pair(method, none_controls(ok)), pair(method, random_controls(ok, method)))

    @property
    def none_rows(self) -> pd.DataFrame:
        return _paired_rows(self.none)

    @property
    def random_rows(self) -> pd.DataFrame:
        return _paired_rows(self.random)
