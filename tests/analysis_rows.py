"""A small hand-made sweep for the analysis tests, with numbers easy to work out by hand.

Waveform, 40 attributes, seeds 0–2 (fine-tuned test accuracy):
    distinctiveness 15°   0.80 0.84 0.86   (pretrained 0.82 0.83 0.81; units removed 0.16 0.14 0.18)
    none                  0.81 0.83 0.82
    random as 15°         0.79 0.80 0.78
    random as 25°         0.50 0.50 0.50   (mirrors another cutoff: must never pair)
    none, lr 1e-3, seed 0 0.99             (other training: must never pair)
    threshold ×1, seed 0  cycle 1: 0.70, cycle 2 (final): 0.85   (2 × 30 fine-tune epochs vs none's 30)
    threshold, seed 1     failed
Dogs vs. Cats, seeds 0–1:
    distinctiveness 15° + filters 50% (l1)   0.70 0.66   (units removed 0.20 0.30; filters 0.5)
    none                                      0.69 0.66
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prunerlib.records import schema, to_table

_WAVEFORM = {"dataset": "waveform", "attributes": 40, "model": "ffn", "hidden": 50, "data_seed": 0,
             "activation": "sigmoid", "epochs_pretrain": 100, "epochs_finetune": 30, "batch_size": 32, "lr": 3e-4,
             "optimizer": "adam", "cycles": 1, "params_total": 2203, "n_test": 1000}
_CNN = _WAVEFORM | {"dataset": "catsdogs", "attributes": None, "model": "cnn", "hidden": 128, "conv_channels": "16,32",
                    "epochs_finetune": 15, "lr": 1e-3, "params_total": 116834, "n_test": 400}
_DISTINCT = {"angle_cutoff": 15.0, "merge": "none", "remove_constant": False}
_THRESHOLD = {"threshold_factor": 1.0, "threshold_stat": "mean_abs", "threshold_layers": "hidden"}
_FILTERS = {"filter_criterion": "l1", "filters_frac": 0.5, "filters_pruned": "8,16"}
_PROVENANCE = {"sweep": "handmade", "host": "node-a", "device": "cpu", "torch_version": "2.14.1",
               "prunerlib_version": "0.1.0", "python_version": "3.11.7", "wall_finetune_s": 10.0}


def _trial(name: str, seed: int, base: dict[str, Any], accs: list[float], pretrain: float = 0.82,
           **settings: Any) -> list[dict[str, Any]]:
    """One row per cycle; the last is final. Half the parameters count as removed per cycle
    of a pruning trial, none for the control."""
    rows = []
    for cycle, acc in enumerate(accs, start=1):
        pruned = settings.get("pruner") != "none"
        nonzero = base["params_total"] // (2 * cycle) if pruned else base["params_total"]
        rows.append(base | _PROVENANCE | settings | {
            "trial_id": f"{name}-{seed}", "config_hash": f"{name}-{seed}", "cycle": cycle, "final": cycle == len(accs),
            "status": "ok", "seed": seed, "acc_pretrain": pretrain, "acc_finetuned": acc,
            "params_nonzero": nonzero, "theoretical_speedup": base["params_total"] / nonzero,
            "units_removed_frac": settings.get("units_removed_frac", 0.0),
            "weights_removed_frac": 0.0 if not pruned else 1 - 1 / (2 * cycle),
            "pretrain_reused": settings.get("pruner") != "none", "wall_pretrain_s": 30.0,
        })
    return rows


def handmade_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for seed, (fine, pre, units, none, rand) in enumerate(zip(
            (0.80, 0.84, 0.86), (0.82, 0.83, 0.81), (0.16, 0.14, 0.18), (0.81, 0.83, 0.82), (0.79, 0.80, 0.78))):
        rows += _trial("dist15", seed, _WAVEFORM, [fine], pre, pruner="distinctiveness", units_removed_frac=units,
                       **_DISTINCT)
        rows += _trial("none", seed, _WAVEFORM, [none], pre, pruner="none")
        rows += _trial("rand15", seed, _WAVEFORM, [rand], pre, pruner="random", match="distinctiveness",
                       units_removed_frac=units, **_DISTINCT)
        rows += _trial("rand25", seed, _WAVEFORM, [0.50], pre, pruner="random", match="distinctiveness",
                       **(_DISTINCT | {"angle_cutoff": 25.0}))
    rows += _trial("none-lr", 0, _WAVEFORM | {"lr": 1e-3}, [0.99], pruner="none")
    rows += _trial("thr", 0, _WAVEFORM | {"cycles": 2}, [0.70, 0.85], pruner="threshold", **_THRESHOLD)
    rows.append(_WAVEFORM | _PROVENANCE | _THRESHOLD | {
        "trial_id": "thr-1", "cycle": 1, "final": True, "status": "failed", "seed": 1, "pruner": "threshold",
        "error": "RuntimeError: loss diverged"})
    for seed, (fine, units, none) in enumerate(zip((0.70, 0.66), (0.20, 0.30), (0.69, 0.66))):
        rows += _trial("cnn-dist", seed, _CNN, [fine], 0.68, pruner="distinctiveness", units_removed_frac=units,
                       filters_removed_frac=0.5, **_DISTINCT, **_FILTERS)
        rows += _trial("cnn-none", seed, _CNN, [none], 0.68, pruner="none", filters_removed_frac=0.0)
    return rows


def plugin_rows() -> list[dict[str, Any]]:
    """A user's pruner (`lowest_l2_units`, setting `units_frac`, reporting units_removed_frac) at
    two settings beside the handmade Waveform trials, with a random control mirroring each:
        lowest_l2_units 0.2   0.83 0.85 0.84       random as 0.2   0.80 0.81 0.79
        lowest_l2_units 0.4   0.78 0.80 0.79       random as 0.4   0.70 0.72 0.71"""
    rows = [r for r in handmade_rows() if r["dataset"] == "waveform"]
    for frac, fine, rand in ((0.2, (0.83, 0.85, 0.84), (0.80, 0.81, 0.79)), (0.4, (0.78, 0.80, 0.79), (0.70, 0.72, 0.71))):
        for seed in range(3):
            rows += _trial(f"l2u{frac}", seed, _WAVEFORM, [fine[seed]], (0.82, 0.83, 0.81)[seed],
                           pruner="lowest_l2_units", units_frac=frac, units_removed_frac=frac)
            rows += _trial(f"rand-l2u{frac}", seed, _WAVEFORM, [rand[seed]], (0.82, 0.83, 0.81)[seed],
                           pruner="random", match="lowest_l2_units", units_frac=frac, units_removed_frac=frac)
    return rows


# (dense ms at batch 256, at batch 1) of each network, as a timing on one CPU thread might give
_DENSE_MS = {"ffn": (0.08, 0.012), "cnn": (2.4, 0.35)}


def timed_rows(rows: list[dict[str, Any]] | None = None, threshold: float | None = None) -> list[dict[str, Any]]:
    """The rows as a run that timed its models writes them: each final ok row gets the latency
    columns (`theoretical_speedup` set to `threshold` for threshold trials when given). What a
    pruner gives on the clock, at batch 256 and at batch 1:
        threshold (and its random control)   1.0   1.0    zeroed weights: the shapes stay dense
        none                                 1.0   1.0
        any other pruner                     0.9 × theoretical   1.02   (batch 1: call overhead)"""
    rows = handmade_rows() if rows is None else rows
    timed = []
    for row in rows:
        if not (row.get("final") and row.get("status") == "ok"):
            timed.append(row)
            continue
        method = row.get("match") if row["pruner"] == "random" else row["pruner"]
        theoretical = threshold if method == "threshold" and threshold is not None else row["theoretical_speedup"]
        shrinks = method not in ("threshold", "none")
        speedups = (0.9 * theoretical, 1.02) if shrinks else (1.0, 1.0)
        dense = _DENSE_MS[row["model"]]
        timed.append(row | {"theoretical_speedup": theoretical, "latency_batch": 256, "latency_threads": 1,
                            "latency_ms_dense": dense[0], "latency_ms_pruned": dense[0] / speedups[0],
                            "measured_speedup": speedups[0], "latency_ms_dense_b1": dense[1],
                            "latency_ms_pruned_b1": dense[1] / speedups[1], "measured_speedup_b1": speedups[1]})
    return timed


def write_results(path: Path, rows: list[dict[str, Any]] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """The rows as a results file, through the schema contract; `drop` removes columns, as an
    older or foreign file might lack them. A column the schema does not know (a plugin's
    setting, when this process has not loaded the plugin) is added after them, as a run that
    loaded it writes it."""
    rows = handmade_rows() if rows is None else rows
    foreign = sorted({key for row in rows for key in row} - set(schema().names))
    table = to_table([{k: v for k, v in row.items() if k not in foreign} for row in rows])
    for name in foreign:
        table = table.append_column(name, pa.array([row.get(name) for row in rows]))
    pq.write_table(table.drop_columns(list(drop)), path)
    return path
