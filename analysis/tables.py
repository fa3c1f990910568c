"""The paper's Tables 1–3 beside ours, and the honest comparison against the controls.

Pure functions on a DataFrame of result rows (the columns of `prunerlib.records.SCHEMA`):
cell statistics (mean, sample std, n), pairing of method and control trials, paired
differences with Student-t confidence intervals, table building, Markdown and LaTeX.
Rows hold fractions; tables show percent, and differences in percentage points (pp).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


class MissingData(Exception):
    """One table cannot be built from these rows; the message names what is missing."""


# --------------------------------------------------------------------------- published numbers
# SPEC §7, in percent; the paper reports one run per cell. Key: (table, attributes, quantity, method).
PUBLISHED: dict[tuple[str, int | None, str, str], float] = {
    ("table1", 40, "pretrain", "distinctiveness"): 82.70,
    ("table1", 40, "pretrain", "threshold"): 81.33,
    ("table1", 40, "pretrain", "decision_tree"): 80.5,
    ("table1", 40, "pretrain", "logic_classifier"): 78.93,
    ("table1", 40, "finetune", "distinctiveness"): 85.83,
    ("table1", 40, "finetune", "threshold"): 85.00,
    ("table1", 21, "pretrain", "distinctiveness"): 82.10,
    ("table1", 21, "pretrain", "threshold"): 83.02,
    ("table1", 21, "finetune", "distinctiveness"): 84.26,
    ("table1", 21, "finetune", "threshold"): 85.98,
    ("table2", 40, "removed", "distinctiveness"): 16.00,
    ("table2", 40, "removed", "threshold"): 45.00,
    ("table2", 21, "removed", "distinctiveness"): 13.41,
    ("table2", 21, "removed", "threshold"): 49.43,
    ("table3", None, "accuracy", "distinctiveness"): 65.00,
    ("table3", None, "accuracy", "threshold"): 61.07,
    ("table3", None, "accuracy", "vgg16"): 85.76,
    ("table3", None, "linear_removed", "distinctiveness"): 23.51,
    ("table3", None, "linear_removed", "threshold"): 49.43,
    ("table3", None, "filters_removed", "distinctiveness"): 43.12,
    ("table3", None, "filters_removed", "threshold"): 46.57,
}


def published(table: str, attributes: int | None, quantity: str, method: str) -> float | None:
    return PUBLISHED.get((table, attributes, quantity, method))


def published_gain(attributes: int, method: str) -> float | None:
    """The paper's 'pruning improves accuracy': fine-tuned minus pretrained, Table 1."""
    pre = published("table1", attributes, "pretrain", method)
    fine = published("table1", attributes, "finetune", method)
    return None if pre is None or fine is None else round(fine - pre, 2)


# --------------------------------------------------------------------------- settings and columns
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "distinctiveness": {"angle_cutoff": 15.0, "merge": "none", "remove_constant": False},
    "threshold": {"threshold_factor": 1.0, "threshold_stat": "mean_abs", "threshold_layers": "hidden"},
    "filters": {"filter_criterion": "l1"},
}
PRUNING_COLUMNS = ("angle_cutoff", "merge", "remove_constant", "threshold_factor", "threshold_stat",
                   "threshold_layers", "filter_criterion", "filters_pruned", "filters_frac")
# What a random control copies from the method it mirrors (SPEC §4.4); its own filter
# criterion is 'random', so the criterion is not among them. It must also run the same
# schedule, or it would not remove the same amount.
MIRRORED_COLUMNS = (*(c for c in PRUNING_COLUMNS if c != "filter_criterion"), "cycles", "max_acc_drop",
                    "epochs_finetune")
TRAINING_COLUMNS = ("model", "hidden", "conv_channels", "activation", "epochs_pretrain", "pretrain_stop",
                    "patience", "min_delta", "batch_size", "lr", "optimizer", "momentum", "weight_decay")
# A control pairs with a method trial when it saw the same data, network and pretraining: the
# difference then isolates pruning. Fine-tuning epochs and cycles are left out on purpose: a none
# control may run them differently to reach the same total (checked by `finetune_budget`).
PAIR_COLUMNS = ("dataset", "attributes", "data_seed", "seed", *TRAINING_COLUMNS)
SETTING_COLUMNS = (*PRUNING_COLUMNS, *TRAINING_COLUMNS, "cycles", "max_acc_drop", "epochs_finetune")

TABLE1_COLUMNS = ("attributes", "acc_pretrain", "angle_cutoff", "threshold_factor", "threshold_stat")
TABLE2_COLUMNS = ("attributes", "units_removed_frac", "weights_removed_frac", "angle_cutoff",
                  "threshold_factor", "threshold_stat")
TABLE3_COLUMNS = ("units_removed_frac", "weights_removed_frac", "filters_removed_frac", "angle_cutoff",
                  "threshold_factor", "threshold_stat", "filter_criterion", "filters_pruned", "filters_frac")

PRUNER_NAMES = {"distinctiveness": "Distinctiveness", "threshold": "Threshold", "filters": "Filters only",
                "none": "none", "random": "random"}
PRUNER_ORDER = ("distinctiveness", "threshold", "filters", "random", "none")
DATASET_NAMES = {"waveform": "Waveform", "catsdogs": "Dogs vs. Cats"}


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingData(f"{what}: the results have no column(s) {', '.join(missing)}")


# --------------------------------------------------------------------------- statistics
def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer number of degrees of freedom, by the exact
    finite series of Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= (k - 1) / k * cos2
            total += term
        return 2 / math.pi * (theta + sin * total)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * cos2
        total += term
    return sin * total


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|): the p-value of a two-sided t test."""
    return max(0.0, 1.0 - _t_central(abs(t), df)) if math.isfinite(t) else 0.0


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: the i-th smallest is multiplied by
    (m − i + 1), and no adjusted value is below one ranked before it. Rejecting those < α keeps the
    family-wise error at α for any dependence between the tests."""
    m, adjusted, running = len(pvalues), [math.nan] * len(pvalues), 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t (p in (0.5, 1), integer df >= 1), by bisection on `_t_central`;
    scipy is not a dependency, and a sample of seeds always has an integer df."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0.5 < p < 1, got df={df}, p={p}")
    target, low, high = 2 * p - 1, 0.0, 1.0
    while _t_central(high, df) < target:
        high *= 2
    while high - low > 1e-12 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central(mid, df) < target else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Stats:
    n: int
    mean: float  # nan when n == 0
    std: float  # sample standard deviation (ddof=1); nan when n < 2

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        data = np.asarray(list(values), dtype=float)
        data = data[~np.isnan(data)]
        n = len(data)
        return cls(n, float(data.mean()) if n else math.nan, float(data.std(ddof=1)) if n > 1 else math.nan)

    def ci(self, level: float = 0.95) -> tuple[float, float] | None:
        """mean ± t_{(1+level)/2, n−1} · sd / √n; undefined for fewer than two values."""
        if self.n < 2 or not math.isfinite(self.std):
            return None
        half = t_quantile(0.5 + level / 2, self.n - 1) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half


Z_95 = 1.959963984540054  # standard normal 0.975 quantile


def wilson(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% Wilson score interval for a proportion p observed on n cases: the test-sample
    noise of an accuracy measured on n test examples."""
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


SEED_ONLY, SEED_AND_SPLIT = "training seed only", "training seed and data split"


def covers(rows: pd.DataFrame) -> str | None:
    """What a spread over these trials covers: seeds vary training only unless each seed also
    draws its own data split (`data_seed` varies); None when the rows do not say."""
    if "data_seed" not in rows.columns or rows["data_seed"].isna().all():
        return None
    return SEED_AND_SPLIT if rows["data_seed"].nunique() > 1 else SEED_ONLY


def n_test(rows: pd.DataFrame) -> int | None:
    """Test examples behind these trials' accuracies (the fewest, should they differ); None when unknown."""
    counts = pd.to_numeric(column(rows, "n_test"), errors="coerce").dropna()
    return int(counts.min()) if len(counts) else None


def coverage_note(groups: Iterable[pd.DataFrame], subject: str, accuracy: str | None = "acc_finetuned",
                  in_column: bool = False, paired: bool = False) -> str:
    """One line per table: what its `subject` ('± values', 'CIs') cover, and for accuracies on a
    fixed split the size of the test-sample noise they leave out (a Wilson interval at each
    group's mean accuracy), or that the table's test-sample column gives it."""
    groups = [g for g in groups if len(g) > 1]  # one trial has no spread to speak of
    kinds = {covers(g) for g in groups}
    if not groups:
        return f"There are no {subject} to cover anything: no row has two or more seeds."
    if None in kinds:
        return f"What the {subject} cover is unknown: the rows have no data_seed."
    if kinds == {SEED_AND_SPLIT}:
        return (f"The {subject} cover the {SEED_AND_SPLIT}: data_seed varies with the seed"
                + (", so each seed is tested on its own test sample and test-sample noise is in them." if accuracy
                   else "."))
    mixed = f" ({SEED_AND_SPLIT} where data_seed varies within a row)" if SEED_AND_SPLIT in kinds else ""
    text = f"The {subject} cover the {SEED_ONLY}{mixed}: data_seed is fixed"
    if accuracy is None:
        return text + "."
    text += ", so every seed is tested on the same examples and test-sample noise is not in them"
    fixed = [g for g in groups if covers(g) == SEED_ONLY]
    sizes = {n_test(g) for g in fixed}
    if None in sizes:
        return text + "; its size is unknown: n_test unknown (the rows do not record it)."
    if in_column:
        return text + f"; the '{TEST_SAMPLE}' column gives it (the interval our mean accuracy has from its n_test " \
                      "test examples alone)."
    halves = sorted(50 * (high - low) for g in fixed
                    for low, high in [wilson(float(pd.to_numeric(g[accuracy], errors="coerce").mean()), n_test(g))])
    spread = f"±{halves[0]:.1f}" if f"{halves[0]:.1f}" == f"{halves[-1]:.1f}" else \
        f"±{halves[0]:.1f} to ±{halves[-1]:.1f}"
    paired_words = ("; a paired difference's own needs per-example predictions, which the rows do not carry"
                    if paired else "")
    return (text + f" (one accuracy's 95% Wilson interval at n_test = {', '.join(map(str, sorted(sizes)))} is "
            f"{spread} points{paired_words}).")


# --------------------------------------------------------------------------- selecting rows
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


# --------------------------------------------------------------------------- pairing
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
    settings = set(row_key(method, ("pruner", *MIRRORED_COLUMNS)))
    randoms_as = randoms.assign(pruner=column(randoms, "match"))
    return randoms[row_key(randoms_as, ("pruner", *MIRRORED_COLUMNS)).isin(settings)]


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


# --------------------------------------------------------------------------- setting labels and groups
def _num(value: Any) -> str:
    return f"{float(value):g}"


def setting_label(row: pd.Series, extra: Sequence[str] = ()) -> str:
    """A short human label for a trial's setting, e.g. '15°', '×1 mean_abs', 'filters 50% (l1)'."""
    method = row.get("match") if row["pruner"] == "random" else row["pruner"]
    parts = []
    if method == "distinctiveness" and as_text(row.get("angle_cutoff")):
        parts.append(f"{_num(row['angle_cutoff'])}°")
        if as_text(row.get("merge")) not in ("", "none"):
            parts.append(f"merge {row['merge']}")
        if row.get("remove_constant") is True:
            parts.append("remove constant")
    if method == "threshold" and as_text(row.get("threshold_factor")):
        parts.append(f"×{_num(row['threshold_factor'])} {as_text(row.get('threshold_stat'))}".strip())
        if as_text(row.get("threshold_layers")) not in ("", "hidden"):
            parts.append(f"layers {row['threshold_layers']}")
    if as_text(row.get("filters_frac")):
        parts.append(f"filters {100 * float(row['filters_frac']):g}% ({as_text(row.get('filter_criterion'))})")
    elif as_text(row.get("filters_pruned")):
        parts.append(f"filters {row['filters_pruned']} ({as_text(row.get('filter_criterion'))})")
    parts += [f"{name}={as_text(row.get(name))}" for name in extra]
    label = ", ".join(parts) or "—"
    return f"as {method}: {label}" if row["pruner"] == "random" else label


def varying_columns(rows: pd.DataFrame, columns: Sequence[str] = (*TRAINING_COLUMNS, "cycles", "max_acc_drop",
                                                                    "epochs_finetune")) -> list[str]:
    """Columns among `columns` that take more than one value (null counts as a value)."""
    return [c for c in columns if c in rows.columns and row_key(rows, (c,)).nunique() > 1]


def setting_groups(ok: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows split into settings (everything but the seeds), in table order."""
    if ok.empty:
        return []
    keys = row_key(ok, ("dataset", "attributes", "pruner", "match", *SETTING_COLUMNS))
    groups = [rows for _, rows in ok.groupby(keys, sort=False)]

    def order(rows: pd.DataFrame) -> tuple[Any, ...]:
        first = rows.iloc[0]
        attributes = first.get("attributes")
        return (
            list(DATASET_NAMES).index(first["dataset"]) if first["dataset"] in DATASET_NAMES else 99,
            -(attributes if as_text(attributes) else 0),
            PRUNER_ORDER.index(first["pruner"]) if first["pruner"] in PRUNER_ORDER else 99,
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


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Table:
    name: str  # file stem
    title: str
    data: pd.DataFrame  # numbers, for CSV
    display: pd.DataFrame  # formatted text, for Markdown and LaTeX
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cell:
    """One method row of a paper table: which trials it uses, and why it may have none."""

    attributes: int | None
    method: str  # pruner name, the key into PUBLISHED
    label: str
    rows: pd.DataFrame
    wanted: str  # the selection in words, for 'no rows' messages
    notes: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # columns telling this cell's setting from others that also match

    @property
    def setting(self) -> str:
        return setting_label(self.rows.iloc[0], self.extra) if not self.rows.empty else "—"

    @property
    def title(self) -> str:
        attributes = f"{self.attributes} attr., " if self.attributes else ""
        return f"{attributes}{self.label} ({self.setting})"


def _one_setting(rows: pd.DataFrame, label: str) -> tuple[pd.DataFrame, tuple[str, ...], tuple[str, ...]]:
    """A cell is one experimental condition, never a mix: when several settings match (say 1
    and 3 cycles at the paper's cutoff), the one with the most trials is shown (ties: the first
    in key order). Returns the rows, the columns that differ, and a note saying so."""
    varying = tuple(varying_columns(rows))
    if not varying:
        return rows, (), ()
    keys = row_key(rows, SETTING_COLUMNS)
    sizes = keys.value_counts()
    chosen = min(sizes.index, key=lambda key: (-sizes[key], key))
    note = (f"{label}: {sizes.size} settings match, differing in {', '.join(varying)}; the one with the most "
            "trials is shown, the others are in the all-settings table")
    return rows[keys == chosen], varying, (note,)


def _paper_setting_words(method: str) -> str:
    return ", ".join(f"{k}={as_text(v)}" for k, v in PAPER_SETTINGS[method].items())


def waveform_cells(ok: pd.DataFrame) -> list[Cell]:
    """Tables 1 and 2: the Waveform trials at the paper's setting of each pruner."""
    cells = []
    for attributes in (40, 21):
        for method in ("distinctiveness", "threshold"):
            wanted = (f"Waveform, {attributes} attributes, pruner {method} at the paper's setting "
                      f"({_paper_setting_words(method)})")
            rows = select(ok, {"dataset": "waveform", "attributes": attributes, "pruner": method,
                               **PAPER_SETTINGS[method]})
            label = PRUNER_NAMES[method]
            rows, extra, notes = _one_setting(rows, f"{attributes} attr., {label}")
            cells.append(Cell(attributes, method, label, rows, wanted, notes, extra))
    return cells


def _filter_setting_key(rows: pd.DataFrame) -> pd.Series:
    return row_key(rows, ("filter_criterion", "filters_pruned", "filters_frac"))


def _nearest_filter_setting(rows: pd.DataFrame, target: float | None,
                            label: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The paper does not give its filter count: of several filter settings, compare at the one
    whose removed share is nearest the paper's (a sparsity match, never an accuracy pick)."""
    keys = _filter_setting_key(rows)
    if keys.nunique() < 2 or target is None:
        return rows, ()
    share = 100 * pd.to_numeric(rows["filters_removed_frac"], errors="coerce")
    nearest = (share.groupby(keys).mean() - target).abs().idxmin()
    chosen = rows[keys == nearest]
    return chosen, (f"{label}: of {keys.nunique()} filter settings, the one whose filter share is nearest the "
                    f"paper's {target:.2f}% ({setting_label(chosen.iloc[0])}) is shown; all are in the "
                    f"all-settings table",)


def cnn_cells(ok: pd.DataFrame) -> list[Cell]:
    """Table 3: 'Dist. Model' / 'Threshold Model' = that linear pruner plus filter ranking, and
    filter ranking alone for each criterion and filter setting."""
    cnn = select(ok, {"dataset": "catsdogs"})
    with_filters = cnn[column(cnn, "filters_frac").notna() | column(cnn, "filters_pruned").notna()]
    cells = []
    for method, label in (("distinctiveness", "Dist. Model"), ("threshold", "Threshold Model")):
        setting = PAPER_SETTINGS[method] | PAPER_SETTINGS["filters"]
        wanted = (f"Dogs vs. Cats, pruner {method} with filter pruning (filters_frac or filters_pruned) at the "
                  f"paper's setting ({', '.join(f'{k}={as_text(v)}' for k, v in setting.items())})")
        rows = select(with_filters, {"pruner": method, **setting})
        rows, filter_notes = _nearest_filter_setting(rows, published("table3", None, "filters_removed", method), label)
        rows, extra, notes = _one_setting(rows, label)
        cells.append(Cell(None, method, label, rows, wanted, filter_notes + notes, extra))
    filters = with_filters[with_filters["pruner"].eq("filters")]
    for _, rows in sorted(filters.groupby(_filter_setting_key(filters)), key=lambda kv: kv[0]):
        rows, extra, notes = _one_setting(rows, f"Filters only ({setting_label(rows.iloc[0])})")
        cells.append(Cell(None, "filters", "Filters only", rows, "Dogs vs. Cats, pruner filters",
                          notes, extra))
    return cells


_STAT_COLUMNS = ("n", "mean", "std", "paper", "diff", "none_n", "none_mean", "none_std",
                 "random_n", "random_mean", "random_std", "status", "is_accuracy", "covers", "n_test", "test_low",
                 "test_high")


def _percent(rows: pd.DataFrame, value: str) -> pd.Series:
    if rows.empty:
        return pd.Series([], dtype=float)
    return 100 * pd.to_numeric(rows[value], errors="coerce")


def _cell_record(lead: dict[str, Any], cell: Cell, value: str, paper: float | None,
                 ok: pd.DataFrame) -> dict[str, Any]:
    arms = Arms.of(ok, cell.rows)
    ours, none, rand = (Stats.of(_percent(rows, value)) for rows in (cell.rows, arms.none_rows, arms.random_rows))
    return lead | _test_sample(cell.rows, ours, value) | {
        "n": ours.n, "mean": ours.mean, "std": ours.std,
        "paper": math.nan if paper is None else paper,
        "diff": math.nan if paper is None else ours.mean - paper,
        "none_n": none.n, "none_mean": none.mean, "none_std": none.std,
        "random_n": rand.n, "random_mean": rand.mean, "random_std": rand.std,
        "status": "ok" if ours.n else "no rows",
    }


_ACCURACIES = ("acc_pretrain", "acc_finetuned")


def _test_sample(rows: pd.DataFrame, ours: Stats, value: str) -> dict[str, Any]:
    """What the cell's ± covers and, for an accuracy on a fixed split, the test-sample interval
    at its mean (in percent) that the ± leaves out."""
    size, low, high = n_test(rows), math.nan, math.nan
    if value in _ACCURACIES and ours.n and covers(rows) == SEED_ONLY and size:
        low, high = (100 * x for x in wilson(ours.mean / 100, size))
    return {"is_accuracy": value in _ACCURACIES, "covers": covers(rows) if ours.n else None, "n_test": size,
            "test_low": low, "test_high": high}


def _test_sample_text(record: Mapping[str, Any]) -> str:
    if record["status"] != "ok" or not record["is_accuracy"]:
        return "—"
    if math.isfinite(record["test_low"]):
        return f"[{fmt(record['test_low'])}, {fmt(record['test_high'])}]"
    return {SEED_AND_SPLIT: "in ±", SEED_ONLY: "n_test unknown"}.get(record["covers"], "unknown")


def _published_record(lead: dict[str, Any], paper: float | None, status: str) -> dict[str, Any]:
    empty = {name: math.nan for name in _STAT_COLUMNS}
    return lead | empty | {"n": 0, "none_n": 0, "random_n": 0, "paper": math.nan if paper is None else paper,
                           "status": status, "is_accuracy": False, "covers": None, "n_test": None}


def _stats_from(record: Mapping[str, Any], prefix: str) -> Stats:
    return Stats(int(record[f"{prefix}n"]), record[f"{prefix}mean"], record[f"{prefix}std"])


def _display(data: pd.DataFrame, lead: Sequence[str]) -> pd.DataFrame:
    """Lead columns as they are, then ours / paper / difference / controls as text."""
    records = []
    for _, record in data.iterrows():
        ours = _stats_from(record, "")
        status = record["status"]
        records.append({name: as_text(record[name]) or "—" for name in lead} | {
            "Ours, mean ± std (n)": fmt_stats(ours) if status == "ok" else status,
            "Paper": fmt(record["paper"]),
            "Ours − paper": fmt_signed(record["diff"]),
            "none control": fmt_stats(_stats_from(record, "none_")),
            "random control": fmt_stats(_stats_from(record, "random_")),
        } | ({TEST_SAMPLE: _test_sample_text(record)} if data["is_accuracy"].any() else {}))
    return pd.DataFrame(records)


TEST_SAMPLE = "Test sample, 95% (Wilson)"


def _missing_notes(cells: Sequence[Cell]) -> tuple[str, ...]:
    return tuple(f"no rows for {cell.wanted}" for cell in cells if cell.rows.empty)


def _cell_notes(cells: Sequence[Cell]) -> tuple[str, ...]:
    return tuple(note for cell in cells for note in cell.notes)


def _require_rows(cells: Sequence[Cell], table: str, wanted: str) -> None:
    if all(cell.rows.empty for cell in cells):
        raise MissingData(f"{table}: no final ok rows for {wanted}")


def table1(df: pd.DataFrame) -> Table:
    _require(df, TABLE1_COLUMNS, "Table 1")
    ok = final_ok(df)
    cells = waveform_cells(ok)
    _require_rows(cells, "Table 1", "Waveform distinctiveness or threshold at the paper's settings")
    records = []
    for attributes in (40, 21):
        for stage, value in (("pretrain", "acc_pretrain"), ("fine-tune", "acc_finetuned")):
            quantity = stage.replace("-", "")
            for cell in (c for c in cells if c.attributes == attributes):
                lead = {"Attr.": attributes, "Stage": stage, "Method": cell.label, "Setting": cell.setting}
                paper = published("table1", attributes, quantity, cell.method)
                records.append(_cell_record(lead, cell, value, paper, ok))
            for baseline, label in (("decision_tree", "Decision tree"), ("logic_classifier", "Logic classifier")):
                paper = published("table1", attributes, quantity, baseline)
                if paper is not None:
                    lead = {"Attr.": attributes, "Stage": stage, "Method": f"{label} (published)", "Setting": "—"}
                    records.append(_published_record(lead, paper, "not run: published figure"))
    data = pd.DataFrame(records)
    notes = ("Test accuracy (%) of the Waveform FFN. Ours: mean ± sample std over seeds (n trials); "
             "controls on the same seeds: none = unpruned, trained for the same epochs; random = the same "
             "number of units / weights removed at random.",
             coverage_note((c.rows for c in cells), "± values", in_column=True),
             "Decision tree and logic classifier are the paper's published baselines, not run here.",
             *_missing_notes(cells), *_cell_notes(cells))
    return Table("table1", "Table 1 — Waveform FFN test accuracy (%)", data,
                 _display(data, ("Attr.", "Stage", "Method", "Setting")), notes)


_REMOVED_MEASURE = {"distinctiveness": ("units_removed_frac", "hidden units"),
                    "threshold": ("weights_removed_frac", "incoming weights of the hidden layer")}


def table2(df: pd.DataFrame) -> Table:
    _require(df, TABLE2_COLUMNS, "Table 2")
    ok = final_ok(df)
    cells = waveform_cells(ok)
    _require_rows(cells, "Table 2", "Waveform distinctiveness or threshold at the paper's settings")
    records = []
    for cell in cells:
        value, measure = _REMOVED_MEASURE[cell.method]
        lead = {"Attr.": cell.attributes, "Method": cell.label, "Setting": cell.setting, "Share of": measure}
        paper = published("table2", cell.attributes, "removed", cell.method)
        records.append(_cell_record(lead, cell, value, paper, ok))
    data = pd.DataFrame(records)
    notes = ("Share of the hidden layer removed (%): distinctiveness removes units, threshold removes "
             "connections (the paper calls both 'units removed').",
             coverage_note((c.rows for c in cells), "± values", accuracy=None),
             *_missing_notes(cells), *_cell_notes(cells))
    return Table("table2", "Table 2 — share of the hidden layer removed (%)", data,
                 _display(data, ("Attr.", "Method", "Setting", "Share of")), notes)


_TABLE3_QUANTITIES = (
    ("accuracy", "Test accuracy", {"distinctiveness": "acc_finetuned", "threshold": "acc_finetuned",
                                   "filters": "acc_finetuned"}),
    ("linear_removed", "Removed in the linear layer", {"distinctiveness": "units_removed_frac",
                                                       "threshold": "weights_removed_frac",
                                                       "filters": "weights_removed_frac"}),
    ("filters_removed", "Conv filters removed", {"distinctiveness": "filters_removed_frac",
                                                 "threshold": "filters_removed_frac",
                                                 "filters": "filters_removed_frac"}),
)


def table3(df: pd.DataFrame) -> Table:
    _require(df, TABLE3_COLUMNS, "Table 3")
    ok = final_ok(df)
    cells = cnn_cells(ok)
    _require_rows(cells, "Table 3", "Dogs vs. Cats trials with filter pruning (distinctiveness, threshold or filters)")
    records = []
    for quantity, label, values in _TABLE3_QUANTITIES:
        for cell in cells:
            lead = {"Quantity": label, "Method": cell.label, "Setting": cell.setting}
            records.append(_cell_record(lead, cell, values[cell.method],
                                        published("table3", None, quantity, cell.method), ok))
        paper = published("table3", None, quantity, "vgg16")
        status = ("not run: needs pretrained VGG16 weights supplied by the user (published figure)"
                  if paper is not None else "not run")
        records.append(_published_record({"Quantity": label, "Method": "VGG16 (published)", "Setting": "—"},
                                         paper, status))
    data = pd.DataFrame(records)
    notes = ("Dogs vs. Cats CNN (%). Dist. Model = distinctiveness on the linear layer plus conv filter ranking; "
             "Threshold Model = threshold on the linear layer plus filter ranking; "
             "Filters only = filter ranking alone.",
             coverage_note((c.rows for c in cells), "± values", in_column=True),
             "Removed in the linear layer: units for distinctiveness, weights of the 800×128 matrix for threshold and "
             "filters (a removed filter masks its input columns there too).",
             "The paper's linear-layer 49.43% for the Threshold Model repeats its Table 2 figure (21 attributes) "
             "and may be a copying error.",
             "VGG16 was not run: the paper used ImageNet-pretrained VGG16 without fine-tuning, and prunerlib does not "
             "ship or download those weights.",
             *_missing_notes(cells), *_cell_notes(cells))
    return Table("table3", "Table 3 — Dogs vs. Cats CNN (%)", data,
                 _display(data, ("Quantity", "Method", "Setting")), notes)


# --------------------------------------------------------------------------- honest comparison
@dataclass(frozen=True)
class Difference:
    """Method minus a reference over paired trials, in percentage points."""

    against: str  # 'pretrained', 'none', 'random'
    values: pd.Series
    paper: float | None = None
    budget_mismatches: int = 0
    trials: tuple[str, ...] = ()  # the method's trial ids: with `against`, what makes two comparisons one

    @property
    def stats(self) -> Stats:
        return Stats.of(self.values)

    @property
    def p(self) -> float:
        """Two-sided paired t test of 'no difference'; nan (no test) with fewer than two pairs or
        when every pair differs by the same amount: accuracies come in steps of 1 / n_test, so two
        seeds often tie, and a zero spread is no evidence of a certain difference."""
        stats = self.stats
        if stats.n < 2 or not stats.std > 1e-9 * max(1.0, abs(stats.mean)):  # float noise of equal differences
            return math.nan
        return t_two_sided_p(stats.mean / (stats.std / math.sqrt(stats.n)), stats.n - 1)

    @property
    def key(self) -> tuple[tuple[str, ...], str]:
        return self.trials, self.against


ALPHA = 0.05  # family-wise error of the report's verdicts, all together


@dataclass(frozen=True)
class Family:
    """The report's paired comparisons as one family of claims. Dozens of comparisons at 5%
    each would make about one in twenty 'significant' by chance, so every verdict uses its
    Holm-adjusted p-value: all verdicts together are wrong with probability at most ALPHA.
    Comparisons without a test (one pair, or no spread) are not in the family."""

    adjusted_p: Mapping[tuple[tuple[str, ...], str], float]

    @classmethod
    def of(cls, diffs: Iterable[Difference]) -> Family:
        tested = {d.key: d.p for d in diffs if not math.isnan(d.p)}  # the same comparison twice counts once
        return cls(dict(zip(tested, holm(list(tested.values())))))

    @property
    def size(self) -> int:
        return len(self.adjusted_p)

    def adjusted(self, diff: Difference) -> float:
        return self.adjusted_p.get(diff.key, math.nan)

    def words(self) -> str:
        return (f"Holm–Bonferroni over the report's {self.size} paired comparisons with two or more seeds "
                f"(family-wise error {ALPHA:.0%})")


def differences(ok: pd.DataFrame, rows: pd.DataFrame, paper_gain: float | None = None) -> list[Difference]:
    """The paper's comparison (fine-tuned − pretrained, within each trial) and the honest ones
    (fine-tuned − none control, − random control, on the same seeds)."""
    arms = Arms.of(ok, rows)
    none, rand = paired_differences(arms.none), paired_differences(arms.random)
    trials = _trial_ids(rows)
    return [
        Difference("pretrained", within_differences(rows), paper_gain, trials=trials),
        Difference("none", none["diff"], budget_mismatches=int(none["same_budget"].eq(False).sum()), trials=trials),
        Difference("random", rand["diff"], trials=trials),
    ]


def _trial_ids(rows: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted(rows["trial_id"].map(as_text)))


def none_difference(ok: pd.DataFrame, rows: pd.DataFrame) -> Difference:
    """A setting's fine-tuned accuracy against the none control on the same seeds (all-settings table)."""
    if rows.iloc[0]["pruner"] == "none":
        return Difference("none", pd.Series([], dtype=float), trials=_trial_ids(rows))
    return Difference("none", paired_differences(pair(rows, none_controls(ok)))["diff"], trials=_trial_ids(rows))


def comparison_family(df: pd.DataFrame) -> Family:
    """Every paired comparison the report shows: the honest comparison table's rows and the
    all-settings table's differences against none (a setting that is also a table cell once)."""
    ok = final_ok(df)
    diffs = [none_difference(ok, rows) for rows in setting_groups(ok)]
    if "acc_pretrain" in ok.columns:
        diffs += [d for _, cell, gain in comparison_cells(ok) for d in differences(ok, cell.rows, gain)]
    return Family.of(diffs)


def _verdict(diff: Difference, family: Family) -> str:
    """The direction of a difference when it survives the Holm correction."""
    stats = diff.stats
    if stats.n == 0:
        return "no paired trials"
    if stats.n == 1:
        return "n=1, not tested"
    if math.isnan(diff.p):
        return "no spread, not tested"
    if family.adjusted(diff) < ALPHA:
        return f"{'higher' if stats.mean > 0 else 'lower'} (supported after Holm correction)"
    return "not supported"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


_AGAINST = {"pretrained": "fine-tuned − pretrained (the paper's comparison)",
            "none": "method − none control (same seeds, same epochs)",
            "random": "method − random control (same seeds, same sparsity)"}


def comparison_cells(ok: pd.DataFrame) -> list[tuple[str, Cell, float | None]]:
    """(table name, cell, paper's gain) for every accuracy cell that has trials."""
    cells: list[tuple[str, Cell, float | None]] = []
    if all(c in ok.columns for c in TABLE1_COLUMNS):
        cells += [("Table 1", c, published_gain(c.attributes, c.method)) for c in waveform_cells(ok)]
    if all(c in ok.columns for c in TABLE3_COLUMNS):
        cells += [("Table 3", c, None) for c in cnn_cells(ok)]
    return [(table, cell, gain) for table, cell, gain in cells if not cell.rows.empty]


def comparison_table(df: pd.DataFrame, family: Family | None = None) -> Table:
    _require(df, ("acc_pretrain",), "Honest comparison")
    ok = final_ok(df)
    cells = comparison_cells(ok)
    if not cells:
        raise MissingData("Honest comparison: no final ok rows for any method cell of Tables 1 or 3 "
                          "(or the columns those tables need are missing)")
    family = family or comparison_family(df)
    records = []
    for table, cell, gain in cells:
        for diff in differences(ok, cell.rows, gain):
            stats, interval = diff.stats, diff.stats.ci()
            records.append({
                "Table": table, "Row": cell.title, "Comparison": _AGAINST[diff.against],
                "n": stats.n, "mean": stats.mean, "std": stats.std,
                "ci_low": interval[0] if interval else math.nan, "ci_high": interval[1] if interval else math.nan,
                "p": diff.p, "p_holm": family.adjusted(diff),
                "paper": math.nan if diff.paper is None else diff.paper,
                "budget_mismatches": diff.budget_mismatches, "verdict": _verdict(diff, family),
            })
    data = pd.DataFrame(records)
    display = pd.DataFrame([{
        "Table": r["Table"], "Row": r["Row"], "Comparison": r["Comparison"], "n": str(r["n"]),
        "Mean difference (pp)": fmt_signed(r["mean"]),
        "95% CI (pp)": fmt_ci(Stats(int(r["n"]), r["mean"], r["std"])),
        "p (Holm)": fmt_p(r["p_holm"]),
        "Paper (pp)": fmt_signed(r["paper"]),
        "Verdict": r["verdict"],
    } for _, r in data.iterrows()])
    notes = ("Paired differences in percentage points, fine-tuned test accuracy. A method trial pairs with the "
             "control trials of the same data, seed, network and pretraining; "
             "95% CI = mean ± t(0.975, n−1)·sd/√n, for each comparison on its own.",
             coverage_note((cell.rows for _, cell, _ in cells), "CIs", paired=True),
             f"p (Holm): two-sided paired t test, adjusted by {family.words()}. A verdict names the direction "
             f"only when that adjusted p < {ALPHA:g}; otherwise the difference is not supported, even where its own "
             "95% CI excludes 0.",
             *(f"{r['Row']}: {int(r['budget_mismatches'])} none-control pair(s) ran a different number of "
               "fine-tuning epochs" for _, r in data.iterrows() if r["budget_mismatches"]))
    return Table("comparison", "Honest comparison — does pruning improve accuracy?", data, display, notes)


def _interval_words(diff: Difference, family: Family) -> str:
    stats, interval = diff.stats, diff.stats.ci()
    if interval is None:
        return f"{fmt_signed(stats.mean)} pp (n={stats.n}, no CI)"
    return (f"{fmt_signed(stats.mean)} pp (95% CI {fmt_signed(interval[0])} to {fmt_signed(interval[1])}, "
            f"n={stats.n}, Holm-adjusted p {fmt_p(family.adjusted(diff))})")


def claim_sentence(title: str, diffs: Sequence[Difference], family: Family) -> str:
    """Whether 'pruning improves accuracy' holds for one table row, in words; a verdict holds
    only after the Holm correction over the report's whole family of comparisons."""
    by = {d.against: d for d in diffs}
    gain, none, rand = by["pretrained"], by["none"], by["random"]
    paper = f"; paper {fmt_signed(gain.paper)} pp" if gain.paper is not None else ""
    over = f"after Holm correction over {family.size} comparisons"
    text = [f"**{title}**: fine-tuned minus pretrained (the paper's comparison), "
            f"{_interval_words(gain, family)}{paper}."]
    verdict = _verdict(none, family)
    against = f"Against the `none` control trained for the same epochs, {_interval_words(none, family)}: "
    if verdict.startswith("higher"):
        text.append(against + f"the claim that pruning improves accuracy **holds**: supported {over}.")
    elif verdict.startswith("lower"):
        text.append(against + f"the claim **does not hold** — pruning costs accuracy (supported {over}).")
    elif verdict == "not supported":
        text.append(against + f"the claim is **not supported** {over} — no difference from simply training "
                    "longer survives it.")
    elif verdict == "n=1, not tested":
        text.append(f"Against the `none` control, {_interval_words(none, family)}: **cannot be judged** from one seed.")
    elif verdict == "no spread, not tested":
        text.append(f"Against the `none` control, {_interval_words(none, family)}: **cannot be judged** — every seed "
                    "differs by the same amount, so a t test has no spread to judge it by.")
    else:
        text.append("There is no paired `none` control: the claim **cannot be judged**.")
    if rand.stats.n:
        criterion = {"n=1, not tested": "one seed only", "no spread, not tested": "every seed differs by the same "
                     "amount, not tested",
                     "not supported": "no difference from random removal survives the Holm correction",
                     "higher": f"the pruning criterion beats random removal (supported {over})",
                     "lower": f"random removal does better than the criterion (supported {over})",
                     }[_verdict(rand, family).split(" (")[0]]
        text.append(f"Against `random` removal at the same sparsity, {_interval_words(rand, family)}: {criterion}.")
    return " ".join(text)


def claim_sentences(df: pd.DataFrame, family: Family | None = None) -> list[str]:
    ok = final_ok(df)
    if "acc_pretrain" not in ok.columns:
        return []
    family = family or comparison_family(df)
    return [claim_sentence(f"{table}, {cell.title}", differences(ok, cell.rows, gain), family)
            for table, cell, gain in comparison_cells(ok)]


# --------------------------------------------------------------------------- every setting
_SETTING_VALUES = (("Pretrained acc. (%)", "acc_pretrain", 100), ("Fine-tuned acc. (%)", "acc_finetuned", 100),
                   ("Units removed (%)", "units_removed_frac", 100),
                   ("Weights removed (%)", "weights_removed_frac", 100),
                   ("Filters removed (%)", "filters_removed_frac", 100),
                   ("Speedup (×)", "theoretical_speedup", 1))


def all_settings_table(df: pd.DataFrame, family: Family | None = None) -> Table:
    ok = final_ok(df)
    groups = setting_groups(ok)
    if not groups:
        raise MissingData("All settings: no final ok rows")
    family = family or comparison_family(df)
    extra = {dataset: varying_columns(rows) for dataset, rows in ok.groupby("dataset")}
    records, display = [], []
    for rows in groups:
        first = rows.iloc[0]
        label = setting_label(first, extra.get(first["dataset"], ()))
        pruner = first["pruner"] if first["pruner"] != "random" else f"random ({as_text(first.get('match'))})"
        record: dict[str, Any] = {"Data": data_label(first), "Pruner": pruner, "Setting": label, "n": len(rows)}
        shown = dict(record, n=str(len(rows)))
        for title, name, scale in _SETTING_VALUES:
            stats = Stats.of(scale * pd.to_numeric(column(rows, name), errors="coerce"))
            record |= {f"{name}_mean": stats.mean, f"{name}_std": stats.std}
            shown[title] = fmt_stats(stats, with_n=False)
        diff = none_difference(ok, rows)
        delta, interval = diff.stats, diff.stats.ci()
        record |= {"delta_none_n": delta.n, "delta_none_mean": delta.mean,
                   "delta_none_ci_low": interval[0] if interval else math.nan,
                   "delta_none_ci_high": interval[1] if interval else math.nan,
                   "delta_none_p": diff.p, "delta_none_p_holm": family.adjusted(diff)}
        shown["Δ acc. vs none (pp), 95% CI"] = (f"{fmt_signed(delta.mean)} {fmt_ci(delta)}" if delta.n else "—")
        shown["p vs none (Holm)"] = fmt_p(family.adjusted(diff))
        records.append(record)
        display.append(shown)
    notes = ("Every setting in the results (final cycle of each successful trial), mean ± sample std over seeds. "
             "Δ vs none: paired fine-tuned accuracy difference against the none control on the same seeds, with its "
             f"own 95% CI and its p-value adjusted by {family.words()}; only p < {ALPHA:g} is a supported difference.",
             coverage_note(groups, "± values and CIs"))
    return Table("all_settings", "All settings", pd.DataFrame(records), pd.DataFrame(display), notes)


# --------------------------------------------------------------------------- building and rendering
TABLE_BUILDERS: tuple[Callable[[pd.DataFrame], Table], ...] = (table1, table2, table3, comparison_table,
                                                                 all_settings_table)


def build_tables(df: pd.DataFrame) -> tuple[list[Table], list[str]]:
    """Every table that can be built, and one message per table that cannot."""
    tables, skipped = [], []
    family = comparison_family(df)  # one family for every table's p-values
    for builder in TABLE_BUILDERS:
        try:
            tables.append(builder(df, family) if builder in (comparison_table, all_settings_table) else builder(df))
        except MissingData as exc:
            skipped.append(str(exc))
    return tables, skipped


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    header = list(table.display.columns)
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.display.itertuples(index=False)]
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "−": r"$-$", "°": r"$^\circ$", "×": r"$\times$", "Δ": r"$\Delta$",
                  "—": "---", "–": "--", "√": r"$\surd$", "·": r"$\cdot$"}


def latex_escape(text: Any) -> str:
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return "".join(_LATEX_UNICODE.get(ch, ch) for ch in escaped)


def to_latex(table: Table) -> str:
    """A booktabs table scaled to the text width (needs \\usepackage{booktabs,graphicx});
    notes go under it in small type."""
    columns = list(table.display.columns)
    lines = [r"% needs \usepackage{booktabs,graphicx}", r"\begin{table}[ht]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}}}", rf"\label{{tab:{table.name}}}",
             r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{{'l' * len(columns)}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in table.display.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize " + r" \par ".join(latex_escape(n) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
