"""Measured against theoretical speedup: the 'Measured speedup' table at the paper's settings
and the sentences saying where the two disagree and why.

FLOPs promise a speedup; the clock may not keep it. A pruner that zeroes single weights (its
`removes` is `weights_removed_frac`) lowers the FLOP count but leaves the compacted network's
shapes dense, and a small network's time is mostly what no FLOP count sees (calls, activations,
pooling, memory traffic). The words are derived from the rows and the registry, so a plugin's
pruner is explained by what it removes, not by its name."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from prunerlib import registry
from prunerlib.analysis.labels import as_text, data_label, fmt
from prunerlib.analysis.rows import MissingData, column, final_ok
from prunerlib.analysis.stats import Stats
from prunerlib.analysis.tables import Cell, Table, cnn_cells, waveform_cells

# The columns a timed trial's final row has (pipeline: Workdirs.latency_batch).
LATENCY_COLUMNS = ("theoretical_speedup", "measured_speedup", "measured_speedup_b1", "latency_batch",
                   "latency_threads", "latency_ms_dense", "latency_ms_pruned", "latency_ms_dense_b1",
                   "latency_ms_pruned_b1", "device")
DISAGREE = 1.25  # measured and theoretical disagree when one exceeds the other by more than 25 %
FLAT = 1.1  # a measured speedup within 10 % of 1 is no speedup
UNSTRUCTURED = "weights_removed_frac"  # a pruner removing this zeroes single weights: no shape shrinks
NAME = "measured_speed"
TITLE = "Measured speedup"


def numbers(rows: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(column(rows, name), errors="coerce")


def timed(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a measured speedup: a file written before prunerlib timed its models
    (or a run with `measure_latency: false`) has nulls there."""
    return rows[numbers(rows, "measured_speedup").notna()]


def untimed_reason(df: pd.DataFrame, what: str) -> str | None:
    """Why `what` cannot be made from these rows, or None when it can. A file from before
    prunerlib timed its models lacks the timing columns or holds nulls there: one reason for both."""
    missing = [c for c in ("theoretical_speedup", "device") if c not in df.columns]
    if missing:
        return f"{what}: the results have no column(s) {', '.join(missing)}"
    if any(c not in df.columns for c in LATENCY_COLUMNS) or timed(final_ok(df)).empty:
        return (f"{what}: no final ok row has a measured latency (files written before prunerlib timed its "
                "models, or runs with measure_latency: false)")
    return None


def batch_words(rows: pd.DataFrame) -> str:
    """The batch size(s) the rows were timed at, e.g. '256' or '64, 256'."""
    sizes = sorted({int(b) for b in numbers(rows, "latency_batch").dropna()})
    return ", ".join(map(str, sizes)) or "—"


# --------------------------------------------------------------------------- the table
def _interval(stats: Stats) -> tuple[float, float]:
    interval = stats.ci()
    return interval if interval is not None else (math.nan, math.nan)


def _stats_record(prefix: str, values: pd.Series) -> dict[str, Any]:
    stats = Stats.of(values)
    low, high = _interval(stats)
    return {f"{prefix}_n": stats.n, f"{prefix}_mean": stats.mean, f"{prefix}_std": stats.std,
            f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


def _cell_record(cell: Cell, rows: pd.DataFrame) -> dict[str, Any]:
    """One cell's timed trials: speedups with their 95 % CI over seeds, mean latencies, and what
    the sentences need (what the pruner removes, the network)."""
    pruner = registry.PRUNERS[cell.method]
    first = rows.iloc[0]
    filters = 100 * numbers(rows, "filters_removed_frac").mean()
    return {
        "pruner": cell.method, "label": cell.label, "data": data_label(first), "setting": cell.setting,
        "model": as_text(first.get("model")), "removes": pruner.removes, "removed_what": pruner.removed_what,
        "unstructured": pruner.removes == UNSTRUCTURED,
        "removed_pct": 100 * numbers(rows, pruner.removes).mean() if pruner.removes else math.nan,
        "filters_removed_pct": filters,
        **_stats_record("theoretical", numbers(rows, "theoretical_speedup")),
        **_stats_record("measured", numbers(rows, "measured_speedup")),
        **_stats_record("measured_b1", numbers(rows, "measured_speedup_b1")),
        **{name: numbers(rows, name).mean() for name in ("latency_ms_dense", "latency_ms_pruned",
                                                        "latency_ms_dense_b1", "latency_ms_pruned_b1")},
        "latency_batch": batch_words(rows),
        "device": ", ".join(sorted(set(column(rows, "device").dropna().astype(str)))) or "—",
        "latency_threads": ", ".join(map(str, sorted({int(t) for t in numbers(rows, "latency_threads").dropna()}))),
    }


def _speed_text(record: pd.Series, prefix: str) -> str:
    n, mean = int(record[f"{prefix}_n"]), record[f"{prefix}_mean"]
    if n == 0:
        return "—"
    if math.isnan(record[f"{prefix}_ci_low"]):
        return f"{fmt(mean)} (n={n})"
    return f"{fmt(mean)} [{fmt(record[f'{prefix}_ci_low'])}, {fmt(record[f'{prefix}_ci_high'])}] (n={n})"


def _removed_text(record: pd.Series) -> str:
    parts = [f"{fmt(record['removed_pct'], 1)}% {record['removed_what']}"] if math.isfinite(record["removed_pct"]) else []
    if record["removes"] != "filters_removed_frac" and record["filters_removed_pct"] > 0:
        parts.append(f"{fmt(record['filters_removed_pct'], 1)}% conv filters")
    return "; ".join(parts) or "—"


def _ms_text(dense: float, pruned: float) -> str:
    return f"{fmt(dense, 3)} → {fmt(pruned, 3)}"


def _display(data: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "Pruner": r["label"], "Data": r["data"], "Setting": r["setting"], "Removed": _removed_text(r),
        "Theoretical ×": _speed_text(r, "theoretical"),
        "Measured × (batch N)": _speed_text(r, "measured"), "N": r["latency_batch"],
        "Measured × (batch 1)": _speed_text(r, "measured_b1"),
        "Dense → pruned ms (batch N)": _ms_text(r["latency_ms_dense"], r["latency_ms_pruned"]),
        "Dense → pruned ms (batch 1)": _ms_text(r["latency_ms_dense_b1"], r["latency_ms_pruned_b1"]),
        "Device (threads)": f"{r['device']} ({r['latency_threads'] or '—'})",
    } for _, r in data.iterrows()])


def speed_table(df: pd.DataFrame) -> Table:
    """Theoretical against measured speedup at the paper's settings: the cells Tables 1–3 show."""
    reason = untimed_reason(df, TITLE)
    if reason:
        raise MissingData(reason)
    ok = final_ok(df)
    cells = [c for c in (*waveform_cells(ok), *cnn_cells(ok)) if not c.rows.empty]
    records = [_cell_record(c, timed(c.rows)) for c in cells if not timed(c.rows).empty]
    if not records:
        raise MissingData(f"{TITLE}: no timed trial at the paper's settings (the cells of Tables 1–3); the figure "
                          "measured_vs_theoretical shows every timed setting")
    untimed = tuple(f"{c.title}: its trials carry no measured latency" for c in cells if timed(c.rows).empty)
    data = pd.DataFrame(records)
    notes = ("Theoretical = dense FLOPs / FLOPs of the pruned network (zeroed weights count as removed). "
             "Measured = median time of the dense network / that of the compacted network the trial saved, "
             "timed on the trial's device (one CPU thread, or CUDA events) at batch N and at batch 1.",
             "Speedups: mean [95% CI, Student's t] over seeds (n trials); times: means over seeds.",
             *untimed)
    return Table(NAME, TITLE, data, _display(data), notes)


# --------------------------------------------------------------------------- the words
def _network(record: pd.Series) -> str:
    return {"ffn": "FFN", "cnn": "CNN"}.get(record["model"], "network")


def _why(record: pd.Series, prefix: str, batch: str) -> str:
    """Why measured and theoretical disagree for one cell at one batch size."""
    measured, theoretical = record[f"{prefix}_mean"], record["theoretical_mean"]
    if measured > theoretical:
        return ("the clock beats the FLOP ratio: the smaller matrices fit the caches better or meet a faster "
                "kernel shape, which a FLOP count does not model")
    if record["unstructured"] and measured <= FLAT:
        return (f"{record['label']} zeroes single weights ({record['removed_what']}): the FLOP count skips the "
                "zeros, but the saved network keeps its dense shapes and a dense kernel multiplies the zeros too; "
                "only removed units or filters shrink the matrices")
    if record["unstructured"]:
        return (f"what the clock sees comes from the filters removed beside it "
                f"({fmt(record['filters_removed_pct'], 1)}%); the weights {record['label']} zeroes count in the "
                "FLOPs but not in the time of a dense kernel")
    dense_ms = record["latency_ms_dense_b1" if prefix == "measured_b1" else "latency_ms_dense"]
    if record["model"] == "ffn":
        if batch == "1":
            return (f"at batch 1 the FFN's forward pass is mostly call overhead ({fmt(dense_ms, 3)} ms dense: "
                    f"dispatch, tiny matrix products), so removing {record['removed_what']} barely changes the time")
        return ("the FFN is small enough that per-layer costs FLOPs do not count (dispatch, bias, activation) "
                f"weigh against the multiply-adds removing {record['removed_what']} saves")
    if record["model"] == "cnn":
        overhead = " and per-call overhead weighs more at batch 1" if batch == "1" else ""
        return ("pooling, activations and memory traffic do not shrink with the filters removed (FLOPs count "
                f"only the multiply-adds of convolutions and linear layers){overhead}")
    return "FLOPs count only multiply-adds; calls, activations and memory traffic take time too"


def _disagreements(record: pd.Series) -> list[tuple[str, float, str]]:
    """(batch, measured, why) for each batch size at which the cell's measured and theoretical
    speedups differ by more than DISAGREE."""
    found = []
    for prefix, batch in (("measured", str(record["latency_batch"])), ("measured_b1", "1")):
        measured, theoretical = record[f"{prefix}_mean"], record["theoretical_mean"]
        if math.isfinite(measured) and math.isfinite(theoretical) and measured > 0 and \
                not 1 / DISAGREE <= measured / theoretical <= DISAGREE:
            found.append((batch, measured, _why(record, prefix, batch)))
    return found


def speed_sentences(table: Table) -> list[str]:
    """Where measured and theoretical speedups disagree by more than 25 %, and why: one sentence
    per cell (and batch size, when the reasons differ), from the table's numbers."""
    data = table.data
    sentences = []
    for _, record in data.iterrows():
        found = _disagreements(record)
        groups = [found] if len({why for *_, why in found}) == 1 else [[one] for one in found]
        for group in (g for g in groups if g):
            batches = " and ".join(batch for batch, *_ in group)
            measured = " and ".join(f"{fmt(m)}×" for _, m, _ in group)
            sentences.append(f"**{record['label']}, {record['data']} ({record['setting']}), batch {batches}**: "
                             f"theoretical {fmt(record['theoretical_mean'])}×, measured {measured} — "
                             f"{group[0][2]}.")
    threads = sorted({t for t in data["latency_threads"] if t})
    lead = (f"Timed on {', '.join(sorted(set(data['device'])))}"
            + (f", {', '.join(threads)} thread{'s' if threads != ['1'] else ''}" if threads else "")
            + f". Measured and theoretical speedups disagree here when one exceeds the other by more than "
            f"{100 * (DISAGREE - 1):.0f}%.")
    if not sentences:
        return [lead, f"They agree within {100 * (DISAGREE - 1):.0f}% for every setting in the table, at both batch "
                      "sizes."]
    return [lead, *sentences]


def speed_section(table: Table) -> list[str]:
    """The words under the table in report.md."""
    return ["### Where measured and theoretical speedups disagree", "",
            *[f"- {s}" for s in speed_sentences(table)], ""]

