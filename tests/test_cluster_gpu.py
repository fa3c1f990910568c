"""GPU scheduling on a cluster whose nodes advertise a GPU this machine does not have
(`ray start --num-gpus 1`): a quarter GPU per trial runs four trials on one GPU at once, the
trials beyond `max_concurrent`'s running share wait as resource demand an autoscaler sees, and
`--dry-run --address` plans with the nodes' own resources. The trials run with `device: cpu`
(what a trial does with its GPU is tests/test_gpu_ray.py's)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from tests.ray_cluster import local_cluster

# ~3 s a trial alone, long beside the Ray workers' start: trials that may overlap do.
SLOW = {"dataset": "waveform", "n": 3000, "epochs_pretrain": 3, "epochs_finetune": 40, "patience": 40,
        "device": "cpu"}
GPU_SPEC = {"name": "gpu", "fixed": SLOW, "seeds": [0, 1, 2, 3, 4, 5], "pack_size": 1,
            "grid": [{"pruner": "threshold", "threshold_factor": 1.0}],
            "resources": {"cpu": 0.5, "gpu": 0.25}, "max_concurrent": 6, "save_models": "none", "measure_latency": False}


def prunerlib_sweep(cluster, spec: dict, tmp_path: Path, *args: str, wait: bool = True):
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "prunerlib.cli", "sweep", str(path), "--address", cluster.address, *args]
    if not wait:
        return subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=300)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def test_a_quarter_gpu_per_trial_runs_four_trials_on_one_gpu_and_queues_the_rest_as_demand(tmp_path):
    storage = tmp_path / "shared"
    with local_cluster() as cluster:
        cluster.start_head(cpus=2)  # a head without GPU, as on a cloud cluster
        cluster.add_node(cpus=2, gpus=1)  # 2 CPUs hold 4 trials of 0.5 CPU; 1 GPU holds 4 of 0.25
        plan = prunerlib_sweep(cluster, GPU_SPEC, tmp_path, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "6 at once (max_concurrent), 4 of them on 4 CPU(s) and 1 GPU(s) now" in plan.stdout, plan.stdout
        assert "1 GPU(s), 4 trial slot(s), but torch there cannot use them" in plan.stdout  # each GPU node's line

        driver = prunerlib_sweep(cluster, GPU_SPEC, tmp_path, "--storage", str(storage), wait=False)
        try:
            # Six trials queued while four run: the other two are pending demand, what an
            # autoscaler reads to add nodes (`ray status` shows the same).
            demand, deadline = "", time.monotonic() + 240
            while "GPU" not in demand and driver.poll() is None and time.monotonic() < deadline:
                status = subprocess.run([cluster.ray, "status", "--address", cluster.address], env=cluster.env,
                                        capture_output=True, text=True, timeout=60).stdout
                demand = status.partition("Pending Demands:")[2] if "Pending Demands:" in status else ""
            out, _ = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        assert driver.returncode == 0, out[-3000:]
        assert "'GPU': 0.25" in demand and "'CPU': 0.5" in demand and "2+ pending placement groups" in demand, demand

        df = pd.read_parquet(storage / "gpu" / "results.parquet")
        assert len(df) == 6 and (df["status"] == "ok").all() and (df["device"] == "cpu").all()
        # Each trial from its start to its trial file's writing: four overlap, never five.
        trials = storage / "gpu" / "trials"
        intervals = [(row.started_at.timestamp(), (trials / f"{row.trial_id}.arrow").stat().st_mtime)
                     for row in df.itertuples()]
        assert most_at_once(intervals) == 4, intervals

        # A trial runs on one node: a node with 1 CPU holds 2 trials of 0.5 CPU whatever its GPU
        # holds, and the head's CPUs hold none (it has no GPU), whatever the totals say.
        cluster.add_node(cpus=1, gpus=1)
        plan = prunerlib_sweep(cluster, {**GPU_SPEC, "name": "nodes", "max_concurrent": None}, tmp_path, "--dry-run")
        assert "; 6 at once on 5 CPU(s) and 2 GPU(s);" in plan.stdout, plan.stdout + plan.stderr
        assert plan.stdout.count(" 4 trial slot(s)") == 1 and plan.stdout.count(" 2 trial slot(s)") == 1
