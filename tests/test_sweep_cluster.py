"""Joining a real Ray cluster (`ray start`ed processes): what the sweep checks before any trial."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.ray_cluster import local_cluster, processes_mentioning

ROOT = Path(__file__).resolve().parents[1]

# The driver reads the plugin when it parses the spec; then the file is gone, as it is on a node
# whose file system lacks it. (One machine has one file system: the order stands in for a node.)
DRIVER = """
import sys
from pathlib import Path
from prunerlib.sweep.cluster import check_cluster, connect
from prunerlib.sweep.spec import SpecError, parse_spec
from prunerlib.sweep.store import SweepFolder

address, plugin, storage = sys.argv[1:]
spec = parse_spec({"name": "plugged", "plugins": [plugin], "fixed": {"dataset": "waveform"}, "seeds": [0],
                   "grid": [{"pruner": "lowest_l2_units"}]})
folder = SweepFolder(storage, spec.name)
folder.root.mkdir(parents=True)
connect(address)
check_cluster(spec, folder, remote=True, interrupted=lambda: False)
print("every node sees it")
Path(plugin).unlink()
try:
    check_cluster(spec, folder, remote=True, interrupted=lambda: False)
except SpecError as exc:
    print(exc)
print(sorted(p.name for p in folder.root.iterdir()))
"""


def test_a_plugin_file_a_node_cannot_see_is_refused_before_any_trial(tmp_path):
    plugin = tmp_path / "shared" / "l2.py"
    plugin.parent.mkdir()
    shutil.copy(ROOT / "examples" / "custom_pruner.py", plugin)
    with local_cluster() as cluster:
        cluster.start_head()
        result = subprocess.run([sys.executable, "-c", DRIVER, cluster.address, str(plugin), str(tmp_path / "shared")],
                                capture_output=True, text=True, env=cluster.env, timeout=300, cwd=ROOT)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[0] == "every node sees it", result.stdout + result.stderr[-2000:]
    assert lines[1].startswith(f"plugins: {plugin} is not on node ") and "same path" in lines[1]
    assert lines[2] == "[]"  # the storage probe cleaned up after itself



# Stays alive after disconnect (its own exit would stop Ray anyway) until told to go: the test
# reads its process tree at "ready" and checks it at "done".
EMBEDDED = """
import ray
from prunerlib.sweep.cluster import connect, disconnect

connect(None)
assert ray.get(ray.remote(lambda: 1).remote()) == 1
print("ready", flush=True)
input()
disconnect()
print("done", flush=True)
input()
"""


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_disconnect_stops_every_process_of_the_embedded_ray():
    """The autoscaler monitor is killed ahead of ray.shutdown (its graceful stop hangs): nothing
    of the embedded Ray may outlive disconnect."""
    import os
    import time
    import uuid

    marker = f"embedded-{uuid.uuid4().hex}"
    driver = subprocess.Popen([sys.executable, "-c", EMBEDDED, marker], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        assert driver.stdout.readline().strip() == "ready"
        ray_pids = processes_mentioning(marker) - {driver.pid}
        assert len(ray_pids) >= 4  # the GCS, the raylet, the monitor, a worker at least
        driver.stdin.write("\n")
        driver.stdin.flush()
        assert driver.stdout.readline().strip() == "done"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in ray_pids):
            time.sleep(0.1)
        assert [pid for pid in ray_pids if _alive(pid)] == []
    finally:
        driver.kill()
        driver.wait()


# A Tune trial on an embedded Ray reports the environment it runs in; the driver, the settings
# Ray started with.
TUNE_ENV = """
import json, os, sys
import ray
from ray import tune
from prunerlib.sweep.cluster import FAST_START, connect, disconnect

connect(None)
def trial(config):
    tune.report({"env": json.dumps({k: os.environ.get(k) for k in ("CUBLAS_WORKSPACE_CONFIG", "PL_DISABLE_FORK")})})
grid = tune.Tuner(trial, run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0)).fit()
config = ray._private.state.state.get_system_config()
session = ray._private.worker._global_node.get_session_dir_path()
print(json.dumps({**{k: config.get(k) for k in FAST_START}, "own_spill_dir": session in config["object_spilling_config"]}))
print(grid[0].metrics["env"])
disconnect()
"""


def test_an_embedded_rays_trials_get_the_workers_environment_and_tunes(tmp_path):
    """An embedded Ray hands its trials cuBLAS's setting (and Tune's own variable) through the
    environment its processes inherit, not a runtime env (which would cost each trial a fresh
    worker): an exact GPU trial needs the setting before CUDA starts."""
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("CUBLAS_WORKSPACE_CONFIG", "PL_DISABLE_FORK")}
    result = subprocess.run([sys.executable, "-c", TUNE_ENV, str(tmp_path)], capture_output=True, text=True,
                            cwd=ROOT, env={**env, "RAY_USAGE_STATS_ENABLED": "0"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PL_DISABLE_FORK": "1"}


def test_an_embedded_ray_starts_with_the_raylets_quick_retries(tmp_path):
    """The raylet retries its object store every 100 ms, not every second (the race it loses
    under a busy driver cost ray.init a second); a second embedded Ray in the same process
    starts afresh (ray.init writes its session into the settings it is given)."""
    import json
    import os

    from prunerlib.sweep.cluster import FAST_START

    twice = TUNE_ENV.replace("connect(None)", "connect(None)\ndisconnect()\nconnect(None)")
    result = subprocess.run([sys.executable, "-c", twice, str(tmp_path)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-2]) == {
        "raylet_client_connect_timeout_milliseconds": 100, "raylet_client_num_connect_attempts": 100,
        "own_spill_dir": True}
    assert set(FAST_START) == {"raylet_client_connect_timeout_milliseconds", "raylet_client_num_connect_attempts"}
