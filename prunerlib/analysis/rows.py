"""Selecting and keying result rows: the columns of `prunerlib.records` in a DataFrame, where a
file may lack a column or hold nulls."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


class MissingData(Exception):
    """One table cannot be built from these rows; the message names what is missing."""


def require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingData(f"{what}: the results have no column(s) {', '.join(missing)}")


def final_ok(df: pd.DataFrame) -> pd.DataFrame:
    """The tables use each successful trial's last cycle."""
    return df[df["final"].eq(True) & df["status"].eq("ok")]


def column(df: pd.DataFrame, name: str) -> pd.Series:
    """A column, or all-null when the file does not have it."""
    return df[name] if name in df.columns else pd.Series(None, index=df.index, dtype=object)


def matches(df: pd.DataFrame, name: str, value: Any) -> pd.Series:
    """Rows whose `name` equals `value` (None matches null, numbers within float tolerance);
    an absent column constrains nothing."""
    if name not in df.columns:
        return pd.Series(True, index=df.index)
    values = df[name]
    if value is None:
        return values.isna()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return pd.Series(np.isclose(numbers, float(value)), index=df.index)
    return values.eq(value).fillna(False).astype(bool)


def select(df: pd.DataFrame, criteria: Mapping[str, Any]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for name, value in criteria.items():
        mask &= matches(df, name, value)
    return df[mask]


def as_text(value: Any) -> str:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def row_key(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string per row identifying its values in `columns` (nulls included), for grouping."""
    present = [c for c in columns if c in df.columns]
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    return df[present].apply(lambda row: "|".join(as_text(v) for v in row), axis=1).astype(object)


def finetune_budget(df: pd.DataFrame) -> pd.Series:
    """Fine-tuning epochs a trial actually ran (epochs per cycle × cycles run); with shared
    pretraining, equal budgets mean equal total epochs."""
    return pd.to_numeric(column(df, "epochs_finetune"), errors="coerce") * df["cycle"].astype(float)
