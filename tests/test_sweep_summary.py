import pandas as pd

from prunerlib.sweep.spec import parse_spec
from prunerlib.sweep.summary import sweep_summary


def row(pruner, acc, seed, status="ok", val=None, **settings):
    base = {"trial_id": f"{pruner}{settings}{seed}", "final": True, "status": status, "error": None,
            "pruner": pruner, "seed": seed, "acc_finetuned": acc, "val_acc_finetuned": acc if val is None else val,
            "dataset": "waveform", "attributes": 40,
            "match": None, "angle_cutoff": None, "threshold_factor": None, "threshold_stat": None,
            "filter_criterion": None, "filters_pruned": None, "units_removed_frac": 0.1,
            "weights_removed_frac": 0.5, "filters_removed_frac": None}
    return base | settings


SPEC = parse_spec({"name": "x", "grid": [{"pruner": "none"}]})


def test_the_summary_names_the_best_setting_per_pruner_and_the_failures():
    frame = pd.DataFrame([
        row("threshold", 0.84, 0, threshold_factor=0.5), row("threshold", 0.86, 1, threshold_factor=0.5),
        row("threshold", 0.87, 0, threshold_factor=1.0), row("threshold", 0.87, 1, threshold_factor=1.0),
        row("none", 0.85, 0), row("none", None, 1, status="failed", error="TrainingDiverged: loss became nan"),
    ])
    text = sweep_summary(frame, SPEC)
    assert "6 configuration(s) finished, 5 ok, 1 failed, 0 error" in text
    best = next(line for line in text.splitlines() if line.strip().startswith("threshold"))
    assert "factor=1 " in best and "87.00% ± 0.00" in best and "weights 50.0%" in best
    assert "TrainingDiverged: loss became nan" in text


def test_the_best_setting_is_chosen_on_validation_accuracy_and_test_accuracy_is_shown_beside_it():
    # factor 0.5 wins on test, factor 1.5 on validation: the summary must pick 1.5.
    frame = pd.DataFrame([
        row("threshold", 0.90, 0, val=0.80, threshold_factor=0.5), row("threshold", 0.90, 1, val=0.80, threshold_factor=0.5),
        row("threshold", 0.85, 0, val=0.88, threshold_factor=1.5), row("threshold", 0.83, 1, val=0.86, threshold_factor=1.5),
    ])
    best = next(line for line in sweep_summary(frame, SPEC).splitlines() if line.strip().startswith("threshold"))
    assert "factor=1.5 " in best
    assert "val 87.00% ± 1.41" in best and "test 84.00% ± 1.41" in best


def test_errored_trials_are_counted_apart_from_failed_ones_and_listed():
    frame = pd.DataFrame([
        row("none", 0.85, 0),
        row("none", None, 1, status="failed", error="TrainingDiverged: loss became nan"),
        row("threshold", None, 0, status="error", error="IndexError: index 7 is out of bounds", threshold_factor=1.0),
        row("threshold", None, 1, status="error", error="IndexError: index 7 is out of bounds", threshold_factor=1.0),
    ])
    text = sweep_summary(frame, SPEC)
    assert text.splitlines()[0].endswith("4 configuration(s) finished, 1 ok, 1 failed, 2 error")
    assert sum(line.strip().startswith("error threshold") and "IndexError" in line for line in text.splitlines()) == 2
    assert any(line.strip().startswith("failed none") for line in text.splitlines())
