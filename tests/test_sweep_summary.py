import pandas as pd

from prunerlib.sweep.spec import parse_spec
from prunerlib.sweep.summary import summarise


def row(pruner, acc, seed, status="ok", **settings):
    base = {"trial_id": f"{pruner}{settings}{seed}", "final": True, "status": status, "error": None,
            "pruner": pruner, "seed": seed, "acc_finetuned": acc, "dataset": "waveform", "attributes": 40,
            "match": None, "angle_cutoff": None, "threshold_factor": None, "threshold_stat": None,
            "filter_criterion": None, "filters_pruned": None, "units_removed_frac": 0.1,
            "weights_removed_frac": 0.5, "filters_removed_frac": None}
    return base | settings


def test_the_summary_names_the_best_setting_per_pruner_and_the_failures():
    frame = pd.DataFrame([
        row("threshold", 0.84, 0, threshold_factor=0.5), row("threshold", 0.86, 1, threshold_factor=0.5),
        row("threshold", 0.87, 0, threshold_factor=1.0), row("threshold", 0.87, 1, threshold_factor=1.0),
        row("none", 0.85, 0), row("none", None, 1, status="failed", error="TrainingDiverged: loss became nan"),
    ])
    text = summarise(frame, parse_spec({"name": "x", "grid": [{"pruner": "none"}]}))
    assert "6 configuration(s) finished, 5 ok, 1 failed" in text
    best = next(line for line in text.splitlines() if line.strip().startswith("threshold"))
    assert "factor=1 " in best and "87.00% ± 0.00" in best and "weights 50.0%" in best
    assert "TrainingDiverged: loss became nan" in text
