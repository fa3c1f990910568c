"""A sweep submitted through Ray's Jobs API, as cluster/README.md tells a user to: a real head
with its dashboard (token authentication on), `ray job submit --working-dir .`, `ray job stop`
mid-sweep, and a resubmitted `--resume` that finishes every configuration exactly once."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import yaml

from tests.ray_cluster import local_cluster

ROOT = Path(__file__).resolve().parents[1]
# Six one-configuration packs of ~3 s each, one Tune trial at a time (the head has 1 CPU): the
# sweep is still running when the test stops it after the first.
SLOW = {"dataset": "waveform", "n": 3000, "epochs_pretrain": 3, "epochs_finetune": 40, "patience": 40}
SPEC = {"name": "jobs", "fixed": SLOW, "seeds": [0, 1, 2], "pack_size": 1,
        "grid": [{"pruner": "threshold", "threshold_factor": [0.5, 1.0]}]}


def ray_job(cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command, *rest = args  # the address goes before an entrypoint's `--`
    return subprocess.run([cluster.ray, "job", command, "--address", cluster.dashboard, *rest], cwd=ROOT,
                          env=cluster.env, capture_output=True, text=True, timeout=timeout)


def test_a_sweep_submitted_as_a_job_stopped_and_resubmitted_with_resume_runs_every_configuration_once(tmp_path):
    spec, storage = tmp_path / "jobs.yaml", tmp_path / "shared"
    spec.write_text(yaml.safe_dump(SPEC))
    sweep = ["--working-dir", ".", "--", "python", "sweeps/launch.py", str(spec), "--address", "auto",
             "--storage", str(storage)]
    trials = storage / "jobs" / "trials"
    with local_cluster() as cluster:
        # The driver gets time to end its trials and keep their rows when the job is stopped.
        cluster.env["RAY_JOB_STOP_WAIT_TIME_S"] = "60"
        cluster.start_head(dashboard=True)
        first = ray_job(cluster, "submit", "--no-wait", "--submission-id", "sweep-1", *sweep)
        assert first.returncode == 0, first.stdout + first.stderr
        deadline = time.monotonic() + 300
        while not any(trials.glob("*.arrow")):
            if time.monotonic() > deadline or int(time.monotonic() * 5) % 50 == 0 and \
                    "RUNNING" not in ray_job(cluster, "status", "sweep-1").stdout:  # failed, or ended already
                raise AssertionError(ray_job(cluster, "logs", "sweep-1").stdout[-3000:])
            time.sleep(0.2)
        stop = ray_job(cluster, "stop", "sweep-1", timeout=180)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        before = {p.name: p.stat().st_mtime_ns for p in trials.glob("*.arrow")}
        assert 1 <= len(before) < 6
        status = ray_job(cluster, "status", "sweep-1")
        assert "Job 'sweep-1' was stopped" in status.stdout, status.stdout + status.stderr
        logs = ray_job(cluster, "logs", "sweep-1").stdout
        assert "interrupted by SIGTERM" in logs and "continue with:" in logs, logs[-3000:]

        # Blocking: `ray job submit` follows the job's log until it ends, and fails if the job does.
        again = ray_job(cluster, "submit", "--submission-id", "sweep-2", *sweep, "--resume", timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "Job 'sweep-2' succeeded" in ray_job(cluster, "status", "sweep-2").stdout  # the sweep's exit code 0
    df = pd.read_parquet(storage / "jobs" / "results.parquet")
    assert len(df) == 6 and df["trial_id"].is_unique and (df["status"] == "ok").all(), df[["trial_id", "status"]]
    assert sorted(zip(df["seed"], df["threshold_factor"])) == [(s, f) for s in (0, 1, 2) for f in (0.5, 1.0)]
    # What finished before the stop was kept, not run again.
    assert {p.name: p.stat().st_mtime_ns for p in trials.glob("*.arrow") if p.name in before} == before
