"""The paper's Tables 1–3 beside ours: each method cell at the paper's setting, with its
controls, the published figure, and the test-sample interval of an accuracy."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from prunerlib import registry
from prunerlib.analysis.columns import TABLE1_COLUMNS, TABLE2_COLUMNS, TABLE3_COLUMNS, setting_columns
from prunerlib.analysis.coverage import SEED_AND_SPLIT, SEED_ONLY, TEST_SAMPLE, coverage_note, covers, n_test
from prunerlib.analysis.labels import as_text, fmt, fmt_signed, fmt_stats, pruner_label, setting_label, varying_columns
from prunerlib.analysis.pairing import Arms
from prunerlib.analysis.published import PAPER_SETTINGS, published
from prunerlib.analysis.rows import MissingData, column, final_ok, require, row_key, select
from prunerlib.analysis.stats import Stats, wilson


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
    keys = row_key(rows, setting_columns(rows))
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
            label = pruner_label(method)
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


def _missing_notes(cells: Sequence[Cell]) -> tuple[str, ...]:
    return tuple(f"no rows for {cell.wanted}" for cell in cells if cell.rows.empty)


def _cell_notes(cells: Sequence[Cell]) -> tuple[str, ...]:
    return tuple(note for cell in cells for note in cell.notes)


def _require_rows(cells: Sequence[Cell], table: str, wanted: str) -> None:
    if all(cell.rows.empty for cell in cells):
        raise MissingData(f"{table}: no final ok rows for {wanted}")


def table1(df: pd.DataFrame) -> Table:
    require(df, TABLE1_COLUMNS, "Table 1")
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




def table2(df: pd.DataFrame) -> Table:
    require(df, TABLE2_COLUMNS, "Table 2")
    ok = final_ok(df)
    cells = waveform_cells(ok)
    _require_rows(cells, "Table 2", "Waveform distinctiveness or threshold at the paper's settings")
    records = []
    for cell in cells:
        pruner = registry.PRUNERS[cell.method]
        value, measure = pruner.removes, pruner.removed_what
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
    require(df, TABLE3_COLUMNS, "Table 3")
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
