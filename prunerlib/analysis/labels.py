"""Names, figure styles, setting labels and number formats for tables and figures.
Rows hold fractions; tables show percent, and differences in percentage points (pp)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from prunerlib import registry
from prunerlib.analysis.columns import SCHEDULE_COLUMNS, TRAINING_COLUMNS, foreign_columns, setting_columns
from prunerlib.analysis.rows import as_text, row_key
from prunerlib.analysis.stats import Stats

DATASET_NAMES = {"waveform": "Waveform", "catsdogs": "Dogs vs. Cats"}


def pruner_label(name: Any) -> str:
    """A pruner's name in tables and figures: its registered label, or its name when this
    process has not loaded it (a plugin's rows)."""
    cls = registry.PRUNERS.get(name)
    return cls.label if cls is not None else str(name)


def pruner_rank(name: Any) -> tuple[int, int]:
    """Display order: the methods as registered, then those this process has not loaded (a
    plugin's rows), then the controls."""
    order = registry.order()
    if name not in order:
        return 1, 0
    return 2 if registry.PRUNERS[name].control else 0, order.index(name)


# --------------------------------------------------------------------------- figure styles
STYLE: dict[str, tuple[str, str]] = {  # pruner: (colour, marker); colour-blind-safe tab10 hues
    "distinctiveness": ("tab:blue", "o"),
    "threshold": ("tab:orange", "s"),
    "filters": ("tab:green", "^"),
    "none": ("0.35", "D"),
}
# Any other pruner (a plugin's) takes the next hue and marker, in display order.
_MORE_STYLES = (("tab:purple", "v"), ("tab:brown", "P"), ("tab:pink", "X"), ("tab:olive", "h"), ("tab:cyan", "*"))
NONE_LABEL = "none control (unpruned, same epochs): mean ± std"


def style(method: str) -> tuple[str, str]:
    """A pruner's (colour, marker), the same in every figure."""
    if method in STYLE:
        return STYLE[method]
    others = [m for m in registry.order() if m not in STYLE and not registry.PRUNERS[m].control]
    return _MORE_STYLES[others.index(method) % len(_MORE_STYLES) if method in others else 0]


def mirrored_pruner(row: pd.Series) -> str:
    """The pruner whose colour a point takes: its own, or the one a random control mirrors."""
    return str(row.get("match")) if row["pruner"] == "random" else str(row["pruner"])


# --------------------------------------------------------------------------- setting labels and groups
def _num(value: Any) -> str:
    return f"{float(value):g}"


def _distinctiveness(row: pd.Series) -> list[str]:
    if not as_text(row.get("angle_cutoff")):
        return []
    parts = [f"{_num(row['angle_cutoff'])}°"]
    if as_text(row.get("merge")) not in ("", "none"):
        parts.append(f"merge {row['merge']}")
    if row.get("remove_constant") is True:
        parts.append("remove constant")
    return parts


def _threshold(row: pd.Series) -> list[str]:
    if not as_text(row.get("threshold_factor")):
        return []
    parts = [f"×{_num(row['threshold_factor'])} {as_text(row.get('threshold_stat'))}".strip()]
    if as_text(row.get("threshold_layers")) not in ("", "hidden"):
        parts.append(f"layers {row['threshold_layers']}")
    return parts


def _filters(row: pd.Series) -> list[str]:
    criterion = as_text(row.get("filter_criterion"))
    if as_text(row.get("filters_pruned")).startswith("auto"):
        # 'auto:l1': split by l1's sensitivity curves; a random control names whose counts it copies
        guide = as_text(row.get("filters_pruned")).partition(":")[2]
        auto = "auto" if guide in ("", criterion) else f"auto by {guide}"
        return [f"filters {100 * float(row['filters_frac']):g}% {auto} ({criterion})"]
    if as_text(row.get("filters_frac")):
        return [f"filters {100 * float(row['filters_frac']):g}% ({criterion})"]
    if as_text(row.get("filters_pruned")):
        return [f"filters {row['filters_pruned']} ({criterion})"]
    return []


# The paper's notation for the built-in pruners' settings ('15°', '×1 mean_abs', 'filters 50%
# (l1)'); any other pruner's settings read 'label value', from the registry.
_NOTATION = {"distinctiveness": _distinctiveness, "threshold": _threshold, "filters": _filters}


def _settings_words(name: Any, row: pd.Series) -> list[str]:
    if name in _NOTATION:
        return _NOTATION[name](row)
    cls = registry.PRUNERS.get(name)
    if cls is not None:
        shown = [(s.label or s.name, s.name) for s in cls.settings]
    else:  # not loaded here: its settings are the columns this prunerlib does not know
        shown = [(column, column) for column in foreign_columns(row.index)]
    return [f"{label} {as_text(row.get(column))}" for label, column in shown if as_text(row.get(column))]


def setting_label(row: pd.Series, extra: Sequence[str] = ()) -> str:
    """A short human label for a trial's setting, e.g. '15°', '×1 mean_abs', 'filters 50% (l1)':
    its pruner's settings (for a random control, those of the pruner it mirrors), then those of
    the companions (filter ranking) the trial adds, then the `extra` columns."""
    method = row.get("match") if row["pruner"] == "random" else row["pruner"]
    parts = _settings_words(method, row) if as_text(method) else []
    for companion in registry.companions():
        if companion.name != method:
            parts += _settings_words(companion.name, row)
    parts += [f"{name}={as_text(row.get(name))}" for name in extra]
    label = ", ".join(parts) or "—"
    return f"as {method}: {label}" if row["pruner"] == "random" else label


def varying_columns(rows: pd.DataFrame, columns: Sequence[str] = (*TRAINING_COLUMNS, *SCHEDULE_COLUMNS)) -> list[str]:
    """Columns among `columns` that take more than one value (null counts as a value)."""
    return [c for c in columns if c in rows.columns and row_key(rows, (c,)).nunique() > 1]


def setting_groups(ok: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows split into settings (everything but the seeds), in table order."""
    if ok.empty:
        return []
    keys = row_key(ok, ("dataset", "attributes", "pruner", "match", *setting_columns(ok)))
    groups = [rows for _, rows in ok.groupby(keys, sort=False)]

    def order(rows: pd.DataFrame) -> tuple[Any, ...]:
        first = rows.iloc[0]
        attributes = first.get("attributes")
        return (
            list(DATASET_NAMES).index(first["dataset"]) if first["dataset"] in DATASET_NAMES else 99,
            -(attributes if as_text(attributes) else 0),
            pruner_rank(first["pruner"]),
            as_text(first.get("match")),
            setting_label(first),
        )

    return sorted(groups, key=order)


def data_label(row: pd.Series) -> str:
    name = DATASET_NAMES.get(row["dataset"], str(row["dataset"]))
    return f"{name}, {as_text(row.get('attributes'))} attr." if as_text(row.get("attributes")) else name


# --------------------------------------------------------------------------- formatting
def _minus(text: str) -> str:
    return text.replace("-", "−")


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else _minus(f"{value:.{digits}f}")


def fmt_signed(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "—"
    return _minus(f"{round(value, digits) + 0.0:+.{digits}f}")  # + 0.0: no "−0.00"


def fmt_stats(stats: Stats, with_n: bool = True) -> str:
    if stats.n == 0:
        return "—"
    n = f" (n={stats.n})" if with_n else ""
    if stats.n == 1:
        return f"{fmt(stats.mean)} (n=1)"
    return f"{fmt(stats.mean)} ± {fmt(stats.std)}{n}"


def fmt_ci(stats: Stats) -> str:
    if stats.n == 0:
        return "—"
    interval = stats.ci()
    if interval is None:
        return "n=1, no CI"
    return f"[{fmt_signed(interval[0])}, {fmt_signed(interval[1])}]"
