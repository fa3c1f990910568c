from pathlib import Path

import pandas as pd
import pytest
import torch

from prunerlib import pretrained
from prunerlib.pipeline import Workdirs, run_trial
from prunerlib.records import columns, to_table
from tests.helpers import ffn_config


def test_trials_sharing_pretraining_settings_pretrain_once(tmp_path, monkeypatch):
    dirs = Workdirs(tmp_path / "pretrained")
    first = run_trial(ffn_config(pruner="threshold"), dirs, progress=False)[0]
    calls = []
    monkeypatch.setattr(pretrained, "pretrain_models", lambda *a, **k: calls.append(1))  # would pretrain
    second = run_trial(ffn_config(pruner="distinctiveness", angle_cutoff=30.0), dirs, progress=False)[0]
    assert calls == [] and not first["pretrain_reused"] and second["pretrain_reused"]
    assert second["acc_pretrain"] == first["acc_pretrain"]
    assert second["pretrain_epochs_run"] == first["pretrain_epochs_run"]
    assert len(list((tmp_path / "pretrained").glob("*/model.pt"))) == 1


def test_a_trial_row_has_every_column_and_nulls_where_they_do_not_apply(tmp_path):
    rows = run_trial(ffn_config(pruner="threshold"), Workdirs(tmp_path), progress=False)
    df = to_table(rows).to_pandas()
    assert list(df.columns) == list(columns())
    row = df.iloc[0]
    assert row["status"] == "ok" and row["final"] and row["cycle"] == 1
    for column in ("angle_cutoff", "filter_criterion", "filters_removed_frac", "filters_pruned", "error", "merge"):
        assert pd.isna(row[column]), column
    assert row["threshold_factor"] == 1.0 and row["attributes"] == 40
    assert 0 < row["weights_removed_frac"] < 1
    assert row["compression_ratio"] == pytest.approx(row["params_total"] / row["params_nonzero"])
    assert row["theoretical_speedup"] == pytest.approx(row["flops_dense"] / row["flops_pruned"])
    assert row["theoretical_speedup"] > 1
    assert 0 <= row["acc_finetuned"] <= 1 and row["wall_finetune_s"] > 0


def test_cycles_prune_more_each_time_and_mark_the_last_final(tmp_path):
    rows = run_trial(ffn_config(pruner="threshold", cycles=3), Workdirs(tmp_path), progress=False)
    assert [r["cycle"] for r in rows] == [1, 2, 3] and [r["final"] for r in rows] == [False, False, True]
    removed = [r["weights_removed_frac"] for r in rows]
    assert removed[0] < removed[1] < removed[2]


def test_pruning_every_unit_away_is_a_result_not_a_crash(tmp_path):
    row = run_trial(ffn_config(pruner="threshold", threshold_factor=50.0), Workdirs(tmp_path), progress=False)[0]
    assert row["status"] == "ok" and row["units_removed_frac"] == 1.0
    assert row["flops_pruned"] == 0 and row["theoretical_speedup"] == float("inf")


def test_max_acc_drop_keeps_the_last_acceptable_cycle_as_final(tmp_path):
    # A zero tolerance with aggressive pruning and no fine-tuning: cycle 2 falls below the
    # pretrained model's validation accuracy, so the trial stops and cycle 1 stays final.
    rows = run_trial(ffn_config(pruner="threshold", threshold_factor=1.5, cycles=4, max_acc_drop=0.0,
                                epochs_finetune=0), Workdirs(tmp_path), progress=False)
    assert [r["cycle"] for r in rows] == [1, 2]
    assert [r["final"] for r in rows] == [True, False]
    assert rows[1]["val_acc_finetuned"] < rows[1]["val_acc_pretrain"]


def test_a_trial_stopped_by_max_acc_drop_keeps_the_accepted_model(tmp_path):
    from prunerlib.datasets import load_data
    from prunerlib.pipeline import TrialState
    from prunerlib.pretrained import load_or_pretrain

    cfg = ffn_config(pruner="threshold", threshold_factor=1.5, cycles=4, max_acc_drop=0.0, epochs_finetune=0)
    data = load_data(cfg)
    model, pre = load_or_pretrain(cfg, data, tmp_path, torch.device("cpu"), progress=False)
    trial = TrialState(cfg, data, model, pre)
    assert trial.prune(1) and trial.record(1, 0.0)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    assert trial.prune(2) and not trial.record(2, 0.0)
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())
    assert trial.masks.kept("fc1.weight") == int((kept["fc1.weight"] != 0).sum())


def test_nothing_left_to_prune_ends_the_cycles(tmp_path):
    rows = run_trial(ffn_config(pruner="distinctiveness", angle_cutoff=1.0, cycles=3), Workdirs(tmp_path),
                     progress=False)
    assert len(rows) == 1 and rows[0]["final"]


def test_the_none_control_trains_every_cycle(tmp_path):
    rows = run_trial(ffn_config(pruner="none", cycles=2), Workdirs(tmp_path), progress=False)
    assert len(rows) == 2 and all(r["units_removed_frac"] == 0 for r in rows)


def test_a_diverging_trial_is_a_failed_row_not_a_crash(tmp_path):
    rows = run_trial(ffn_config(lr=1e38, optimizer="sgd"), Workdirs(tmp_path), progress=False)
    assert len(rows) == 1
    assert rows[0]["status"] == "failed" and "TrainingDiverged" in rows[0]["error"]
    assert to_table(rows).num_rows == 1


def test_random_control_records_the_settings_it_mirrors(tmp_path):
    cfg = ffn_config(pruner="random", match={"pruner": "threshold", "threshold_factor": 1.0})
    row = run_trial(cfg, Workdirs(tmp_path), progress=False)[0]
    mirror = run_trial(ffn_config(pruner="threshold"), Workdirs(tmp_path), progress=False)[0]
    assert (row["pruner"], row["match"], row["threshold_factor"]) == ("random", "threshold", 1.0)
    assert row["weights_removed_frac"] == mirror["weights_removed_frac"]


@pytest.mark.parametrize("method, settings", [("threshold", {"threshold_factor": 1.0}),
                                              ("distinctiveness", {"angle_cutoff": 50.0})])
def test_random_control_removes_as_many_as_its_method_at_every_cycle(tmp_path, method, settings):
    column = {"threshold": "weights_removed_frac", "distinctiveness": "units_removed_frac"}[method]
    dirs = Workdirs(tmp_path)
    own = run_trial(ffn_config(pruner=method, cycles=3, **settings), dirs, progress=False)
    control = run_trial(ffn_config(pruner="random", match={"pruner": method, **settings}, cycles=3), dirs,
                        progress=False)
    assert all(r["status"] == "ok" for r in own + control)
    assert [r[column] for r in control] == [r[column] for r in own]
    assert len(own) >= 2 and own[0][column] < own[-1][column]  # the method kept pruning after cycle 1


def test_a_fault_in_the_code_is_an_error_row_with_its_traceback_not_a_result(tmp_path, monkeypatch):
    from prunerlib.pruners.threshold import Threshold

    def broken(self, ctx):
        return {}["no such key"]

    monkeypatch.setattr(Threshold, "decide", broken)
    (row,) = run_trial(ffn_config(pruner="threshold"), Workdirs(tmp_path), progress=False)
    assert row["status"] == "error" and row["final"]
    assert row["error"].startswith("Traceback") and "KeyError" in row["error"] and "broken" in row["error"]


def test_a_fault_of_the_machine_is_raised_not_recorded(tmp_path, monkeypatch):
    from prunerlib.pruners.threshold import Threshold

    def disk_gone(self, ctx):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Threshold, "decide", disk_gone)
    with pytest.raises(OSError):
        run_trial(ffn_config(pruner="threshold"), Workdirs(tmp_path), progress=False)


def test_a_pack_on_the_cpu_never_loads_torchs_compiler(tmp_path):
    """torch._dynamo and torch._inductor take over a second to import, and some torch calls
    import them in passing (FlopCounterMode, a forward pass on the meta device,
    use_deterministic_algorithms): a sweep worker's whole path, pretraining included, must not."""
    import subprocess
    import sys

    code = ("import sys; from prunerlib.pipeline import Workdirs, run_pack; from tests.helpers import ffn_config; "
            f"run_pack([ffn_config(seed=s, cycles=2) for s in (0, 1)], Workdirs(pretrained={str(tmp_path)!r})); "
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "[]"
