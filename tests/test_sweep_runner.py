"""Real sweeps on a real (embedded) Ray: the CLI in a subprocess, as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prunerlib import registry
from prunerlib.config import TrialConfig
from prunerlib.pipeline import Workdirs, run_trial
from prunerlib.records import columns
from tests.ray_cluster import local_cluster

TINY = {"dataset": "waveform", "n": 600, "epochs_pretrain": 3, "epochs_finetune": 2, "patience": 2}


def sweep(spec: dict, tmp_path: Path, *extra: str, wait: bool = True):
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = [sys.executable, "-m", "prunerlib.cli", "sweep", str(path), "--storage", str(tmp_path / "runs"), *extra]
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                                start_new_session=True)
    return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_a_grid_sweep_records_every_configuration_once_and_survives_a_diverging_trial(tmp_path):
    spec = {
        "name": "grid", "fixed": TINY, "seeds": [0, 1],
        "grid": [
            {"pruner": "distinctiveness", "angle_cutoff": 15},
            {"pruner": "threshold", "threshold_factor": [0.5, 1.0]},
            {"pruner": "none"},
            {"pruner": "none", "lr": 1e38, "optimizer": "sgd"},  # diverges in pretraining
        ],
    }
    result = sweep(spec, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "runs" / "grid"
    assert f"results: {folder / 'results.parquet'}" in result.stdout
    df = pd.read_parquet(folder / "results.parquet")
    # Every column of a process with no plugin loaded (the sweep's own): this test session may have one.
    builtin = {c for c in columns() if registry.setting_owner(c) is None or registry.is_builtin(c)}
    assert builtin <= set(df.columns) and len(df) == 10 and df["final"].all()
    assert df["trial_id"].is_unique and (df["sweep"] == "grid").all() and df["node_id"].notna().all()
    failed = df[df["status"] == "failed"]
    assert len(failed) == 2 and failed["error"].str.contains("TrainingDiverged").all()
    ok = df[df["status"] == "ok"]
    assert len(ok) == 8 and ok["acc_finetuned"].between(0.5, 0.9).all()
    # Pretrained once per seed, on the driver while Ray started: every trial loaded its model,
    # which is the one a trial pretrains by itself.
    assert ok["pretrain_reused"].astype(bool).all()
    assert len(list((folder / "pretrained").glob("*/model.pt"))) == 2
    alone = run_trial(TrialConfig.from_dict(json.loads(ok["config_json"].iloc[0])), Workdirs(tmp_path / "alone"),
                      progress=False)[-1]
    pretrained = ["acc_pretrain", "val_acc_pretrain", "train_acc_pretrain", "pretrain_epochs_run"]
    assert ok.iloc[0][pretrained].tolist() == [alone[c] for c in pretrained] and not alone["pretrain_reused"]
    assert "4 configuration(s)" not in result.stdout and "10 configuration(s) finished, 8 ok, 2 failed" in result.stdout
    # Each ok trial's compacted model, found from results.parquet's folder; a failed trial has none.
    assert sorted(p.name for p in (folder / "models").iterdir()) == sorted(f"{t}.pt" for t in ok["trial_id"])
    assert ok["model_path"].map(lambda p: (folder / p).is_file()).all() and failed["model_path"].isna().all()
    assert (ok["latency_batch"] == 256).all() and (ok["latency_threads"] == 1).all()
    assert (ok["latency_ms_pruned_b1"] > 0).all() and failed["latency_ms_dense"].isna().all()
    assert f"models: {folder / 'models'} (8 compacted model(s)" in result.stdout


def kill_after(spec: dict, tmp_path: Path, files: int) -> dict[str, int]:
    """Start the sweep, SIGKILL its driver once `files` trials have rows; the rows kept then."""
    trials = tmp_path / "runs" / spec["name"] / "trials"
    driver = sweep(spec, tmp_path, wait=False)
    deadline = time.monotonic() + 300
    while len(list(trials.glob("*.arrow"))) < files:
        assert driver.poll() is None, driver.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(1)
    try:  # what a crashed machine leaves: no Ray process of the old run survives
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return {p.name: p.stat().st_mtime_ns for p in trials.glob("*.arrow")}


def test_a_sweep_killed_mid_way_resumes_without_losing_or_repeating_a_trial(tmp_path):
    spec = {"name": "kill", "fixed": {**TINY, "epochs_finetune": 6}, "seeds": [0, 1, 2],
            "grid": [{"pruner": "threshold", "threshold_factor": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]}],
            "max_concurrent": 1, "pack_size": 3}
    before = kill_after(spec, tmp_path, files=4)
    assert 4 <= len(before) < 18

    again = sweep(spec, tmp_path)
    assert again.returncode == 2 and "add --resume" in again.stderr  # a rerun never clobbers a sweep
    resumed = sweep(spec, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "runs" / "kill" / "results.parquet")
    assert len(df) == 18 and df["trial_id"].is_unique and (df["status"] == "ok").all()
    trials = tmp_path / "runs" / "kill" / "trials"
    assert {p.name: p.stat().st_mtime_ns for p in trials.glob("*.arrow") if p.name in before} == before


def test_a_killed_search_resumes_its_study_without_repeating_or_losing_a_point(tmp_path):
    import optuna

    spec = {"name": "searchkill", "fixed": {**TINY, "epochs_finetune": 6, "pruner": "threshold"}, "seeds": [0, 1],
            "search": {"sampler": "nsga2", "num_samples": 12, "seed": 0, "sampler_options": {"population_size": 4},
                       "objectives": {"val_acc_finetuned": "max", "weights_removed_frac": "max"},
                       "space": {"threshold_factor": {"low": 0.25, "high": 3.0}}},
            "max_concurrent": 1, "pack_size": 2}
    before = kill_after(spec, tmp_path, files=6)
    resumed = sweep(spec, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    study = load_study(tmp_path / "runs" / "searchkill")
    points = [t.params["threshold_factor"] for t in study.trials]
    assert len(study.trials) == 12 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len(set(points)) == 12  # a restarted sampler does not ask its old points again
    df = pd.read_parquet(tmp_path / "runs" / "searchkill" / "results.parquet")
    assert len(df) == 24 and df["trial_id"].is_unique and set(before) <= {f"{t}.arrow" for t in df["trial_id"]}


def load_study(folder: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=folder.name, storage=JournalStorage(JournalFileBackend(str(folder / "optuna.journal"))))


def test_an_optuna_search_persists_its_study_and_its_pareto_front_matches_the_results(tmp_path):
    import optuna

    spec = {"name": "pareto", "fixed": {**TINY, "pruner": "threshold"}, "seeds": [0],
            "search": {"sampler": "nsga2", "num_samples": 8, "seed": 1, "sampler_options": {"population_size": 4},
                       "objectives": {"val_acc_finetuned": "max", "weights_removed_frac": "max"},
                       "space": {"threshold_factor": {"low": 0.25, "high": 3.0}}}}
    result = sweep(spec, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "runs" / "pareto"
    study = load_study(folder)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8
    df = pd.read_parquet(folder / "results.parquet")
    assert len(df) == 8 and (df["status"] == "ok").all()
    points = list(zip(df["val_acc_finetuned"], df["weights_removed_frac"], df["threshold_factor"]))
    front = {round(f, 9) for a, w, f in points
             if not any(a2 >= a and w2 >= w and (a2, w2) != (a, w) for a2, w2, _ in points)}
    assert {round(t.params["threshold_factor"], 9) for t in study.best_trials} == front
    for trial in complete:  # the study's values are the rows' values
        row = df[(df["threshold_factor"] - trial.params["threshold_factor"]).abs() < 1e-12].iloc[0]
        assert trial.values == pytest.approx([row["val_acc_finetuned"], row["weights_removed_frac"]])


@pytest.fixture
def two_node_cluster():
    """A Ray head and a second node, each `ray start`ed as its own processes, 1 CPU each."""
    with local_cluster() as cluster:
        cluster.start_head()
        cluster.add_node()
        yield cluster.address, cluster.env


def test_a_sweep_on_a_two_node_cluster_runs_trials_on_both_nodes(tmp_path, two_node_cluster):
    address, env = two_node_cluster
    # Each pack fine-tunes for seconds: one done before the other node's worker has started
    # would hand the second pack to its own actor (Tune reuses actors), and one node runs all.
    spec = {"name": "nodes", "fixed": {**TINY, "epochs_finetune": 10000}, "seeds": [0, 1],
            "grid": [{"pruner": "threshold", "threshold_factor": [0.5, 0.75, 1.0, 1.25]}], "max_concurrent": 2}
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(spec))
    storage = tmp_path / "shared"
    result = subprocess.run([sys.executable, "-m", "prunerlib.cli", "sweep", str(path), "--address", address,
                             "--storage", str(storage)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    df = pd.read_parquet(storage / "nodes" / "results.parquet")
    assert len(df) == 8 and df["trial_id"].is_unique and (df["status"] == "ok").all()
    assert df["node_id"].nunique() == 2, df["node_id"].value_counts()


def _break_threshold_at_half() -> None:
    """worker_process_setup_hook: a fault in the code (a KeyError) for threshold factor 0.5."""
    from prunerlib.pruners.threshold import Threshold

    decide = Threshold.decide

    def broken(self, ctx):
        if self.factor == 0.5:
            return {}["fc1.weight"]
        return decide(self, ctx)

    Threshold.decide = broken


def test_a_fault_in_the_code_is_an_error_row_counted_apart_and_the_sweep_exits_1(tmp_path, capsys):
    import ray

    from prunerlib.sweep.runner import run_sweep
    from prunerlib.sweep.spec import parse_spec

    root = Path(__file__).resolve().parents[1]
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(root)},
                          "worker_process_setup_hook": "tests.test_sweep_runner._break_threshold_at_half"})
    try:
        spec = parse_spec({"name": "broken", "fixed": TINY, "seeds": [0],
                           "grid": [{"pruner": "threshold", "threshold_factor": [0.5, 1.0]}]})
        code = run_sweep(spec, str(tmp_path / "runs"))
    finally:
        ray.shutdown()
    out, err = capsys.readouterr()
    df = pd.read_parquet(tmp_path / "runs" / "broken" / "results.parquet")
    assert code == 1
    assert sorted(df["status"]) == ["error", "ok"]
    error = df[df["status"] == "error"].iloc[0]
    assert error["threshold_factor"] == 0.5 and error["error"].startswith("Traceback") and "KeyError" in error["error"]
    assert "2 configuration(s) finished, 1 ok, 0 failed, 1 error" in out
    (line,) = [line for line in err.splitlines() if "ended in an error" in line]
    assert line.startswith("1 configuration(s) ended in an error") and "--retry-failed" in line
