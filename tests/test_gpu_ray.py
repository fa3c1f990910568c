"""GPU sweeps on a Ray that advertises GPUs this machine does not have (issue 10, items 2, 3,
4, 7, 8): every Ray worker process sees the fake CUDA device of tests/fake_cuda.py (Ray's
worker_process_setup_hook), or, for the broken-GPU case, the real torch, which has no CUDA."""

import functools
import json
import os
import platform
from pathlib import Path

import pandas as pd
import pytest

from prunerlib.sweep.cluster import cluster_plan
from prunerlib.sweep.runner import run_sweep
from prunerlib.sweep.spec import parse_spec

pytestmark = pytest.mark.fake_cuda

ROOT = Path(__file__).resolve().parents[1]
TINY = {"dataset": "waveform", "n": 600, "epochs_pretrain": 2, "epochs_finetune": 1, "patience": 2}
FAULT_SEED = 666  # a pack with this seed breaks the CUDA context of the first worker that runs it
LOG = "GPU_RAY_TEST_LOG"  # folder the workers note what each pack saw in


def _worker_setup() -> None:
    """worker_process_setup_hook: the fake GPU, plus a note per pack (process, the GPUs Ray
    assigned) and a sticky CUDA fault: once a worker has raised torch.AcceleratorError, every
    pack it runs raises it again, as a real broken CUDA context does."""
    import ray
    import torch

    import prunerlib.sweep.trainable as trainable
    from tests.fake_cuda import install_in_ray_worker

    install_in_ray_worker()
    trial = trainable.pack_trial
    broken = []

    @functools.wraps(trial)
    def pack_trial(params, ctx):
        folder = Path(os.environ[LOG])
        seeds = sorted({cfg.seed for cfg in ctx.members(params)})
        with open(folder / "packs.jsonl", "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "gpus": [str(g) for g in ray.get_gpu_ids()], "seeds": seeds,
                                  "broken": bool(broken)}) + "\n")
        if FAULT_SEED in seeds and not broken:
            try:
                (folder / "faulted").touch(exist_ok=False)  # the first attempt only
                broken.append(os.getpid())
            except FileExistsError:
                pass
        if broken:
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return trial(params, ctx)

    trainable.pack_trial = pack_trial  # where a worker looks the pickled trainable up


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    return tmp_path_factory.mktemp("notes")


def _ray(hook: str | None, notes: Path):
    import ray

    env = {"PYTHONPATH": str(ROOT), LOG: str(notes), "RAY_USAGE_STATS_ENABLED": "0"}
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": env, **({"worker_process_setup_hook": hook} if hook else {})})


@pytest.fixture(scope="module")
def fake_gpu_ray(notes):
    """An embedded Ray with 2 advertised GPUs, whose workers all see a (fake) CUDA GPU."""
    import ray

    _ray("tests.test_gpu_ray._worker_setup", notes)
    try:
        yield notes
    finally:
        ray.shutdown()


def sweep(tmp_path: Path, name: str, resources: dict, **extra) -> tuple[int, pd.DataFrame | None]:
    spec = parse_spec({"name": name, "fixed": TINY, "seeds": extra.pop("seeds", [0]),
                       "grid": [{"pruner": "threshold", "threshold_factor": [0.5, 1.0]}],
                       "resources": resources, **extra})
    code = run_sweep(spec, str(tmp_path / "runs"))
    results = tmp_path / "runs" / name / "results.parquet"
    return code, pd.read_parquet(results) if results.exists() else None


def packs_seen(notes: Path) -> list[dict]:
    path = notes / "packs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_gpu_assigned_that_torch_cannot_use_is_a_fault_retried_never_a_cpu_row(tmp_path, notes, capsys):
    import ray

    _ray(None, notes)  # torch in the workers is this machine's: built without CUDA
    try:
        code, df = sweep(tmp_path, "broken", {"cpu": 1, "gpu": 0.5}, max_failures=1, pack_size=2)
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert code == 1 and (df is None or len(df) == 0), df
    line = next(line for line in err.splitlines() if "errored after 1 retry" in line)
    assert "EnvironmentFault" in line and f"host {platform.node()}" in line
    assert "GPU" in line and "torch cannot use it" in line and _torch_reason() in line


def test_trials_without_a_gpu_share_run_on_the_cpu_though_torch_sees_a_gpu(tmp_path, fake_gpu_ray):
    code, df = sweep(tmp_path, "cpuonly", {"cpu": 1, "gpu": 0})
    assert code == 0 and len(df) == 2 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert (df["device"] == "cpu").all(), df["device"]


def test_trials_with_a_gpu_share_run_on_the_gpu_ray_assigned(tmp_path, fake_gpu_ray):
    before = len(packs_seen(fake_gpu_ray))
    code, df = sweep(tmp_path, "gpushare", {"cpu": 1, "gpu": 0.5}, pack_size=1)
    assert code == 0 and len(df) == 2 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert (df["device"] == "cuda").all(), df["device"]  # the first (only) GPU the trial sees
    # The configuration (and so the trial id) says auto, as written; the row says what ran.
    assert all(json.loads(c)["device"] == "auto" for c in df["config_json"])
    seen = packs_seen(fake_gpu_ray)[before:]
    assert len(seen) == 2 and all(p["gpus"] for p in seen), seen


def test_a_broken_cuda_context_ends_its_worker_and_the_retry_runs_in_a_fresh_one(tmp_path, fake_gpu_ray):
    before = len(packs_seen(fake_gpu_ray))
    code, df = sweep(tmp_path, "sticky", {"cpu": 1, "gpu": 0.5}, seeds=[FAULT_SEED, 1], pack_size=1,
                     max_concurrent=1, max_failures=1)
    seen = packs_seen(fake_gpu_ray)[before:]
    assert code == 0 and len(df) == 4 and (df["status"] == "ok").all(), (seen, df[["status", "error"]])
    at = next(i for i, p in enumerate(seen) if FAULT_SEED in p["seeds"])
    assert seen[at + 1]["seeds"] == [FAULT_SEED], seen  # retried (max_failures) ...
    assert seen[at]["pid"] not in {p["pid"] for p in seen[at + 1:]}, seen  # ... and never in the broken worker
    assert not any(p["broken"] for p in seen)
    # Tune does reuse actors here: a healthy worker runs several packs in turn.
    assert max(map([p["pid"] for p in seen].count, {p["pid"] for p in seen})) > 1, seen


def test_the_dry_run_on_a_cluster_shows_each_gpu_nodes_slots_and_population_sizes(fake_gpu_ray):
    import torch

    from prunerlib.config import TrialConfig
    from prunerlib.population import members_that_fit
    from tests.fake_cuda import fake_cuda

    spec = parse_spec({"name": "plan", "fixed": TINY, "seeds": [0, 1],
                       "grid": [{"pruner": "threshold", "threshold_factor": [0.5, 1.0]}],
                       "resources": {"cpu": 1, "gpu": 0.5}})
    text = cluster_plan(spec, None)
    cfg = TrialConfig.from_dict({**TINY, "pruner": "threshold"})
    with fake_cuda():
        size = members_that_fit(cfg, torch.device("cuda", 0), gpu_share=0.5)
    assert "GPU plan: 0.5 GPU per Tune trial" in text
    node = next(line for line in text.splitlines() if line.startswith("  node "))
    assert "2 GPU(s) Fake GPU, 12.0 of 16.0 GiB free; 2 trial slot(s)" in node  # 2 CPUs, 4 half GPUs
    assert f"waveform ffn (hidden {cfg.hidden}, batch {cfg.batch_size}): up to {size} member(s) per population" in text


def _torch_reason() -> str:
    from prunerlib.devices import cuda_unusable

    return cuda_unusable()


def test_a_cluster_sweep_waits_for_its_gpu_workers_to_join(tmp_path):
    """After `ray up` the head is ready before its GPU workers: the sweep waits (bounded) and
    says so, instead of refusing a GPU spec."""
    import subprocess
    import sys

    import yaml

    from tests.ray_cluster import local_cluster

    driver = None
    with local_cluster() as cluster:
        try:
            cluster.start_head(gpus=0)
            spec = {"name": "joining", "fixed": {**TINY, "device": "cpu"}, "seeds": [0],
                    "grid": [{"pruner": "threshold", "threshold_factor": 0.5}], "resources": {"cpu": 1, "gpu": 0.5}}
            path = tmp_path / "joining.yaml"
            path.write_text(yaml.safe_dump(spec))
            driver = subprocess.Popen([sys.executable, "-m", "prunerlib.cli", "sweep", str(path), "--address",
                                       cluster.address, "--storage", str(tmp_path / "shared")],
                                      env={**cluster.env, "PRUNERLIB_GPU_WAIT_S": "90"},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            seen = []
            while not seen or ("waiting up to" not in seen[-1] and seen[-1]):
                seen.append(driver.stdout.readline())
            assert "waiting up to 90 s for a node with 0.5 GPU to join the Ray cluster" in seen[-1], "".join(seen)
            cluster.add_node(gpus=1)  # the GPU worker joins
            out, _ = driver.communicate(timeout=300)
            assert driver.returncode == 0, out[-3000:]
            df = pd.read_parquet(tmp_path / "shared" / "joining" / "results.parquet")
            assert len(df) == 1 and df["status"].eq("ok").all() and df["device"].eq("cpu").all()
        finally:
            if driver is not None and driver.poll() is None:
                driver.kill()
                driver.wait()
