"""The Ray cluster a sweep runs on: joining it, refusing before any trial starts a sweep it can
never schedule or whose storage some node cannot see, waiting for GPU nodes to join, and the
per-GPU-node plan of `prunerlib sweep --dry-run --address`.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.sweep.checks import seeded
from prunerlib.sweep.spec import SpecError, SweepSpec
from prunerlib.sweep.store import SweepFolder
from prunerlib.sweep.trainable import WORKER_ENV


def connect(address: str | None) -> None:
    """Start an embedded Ray (address None) or join the cluster at `address`, with the
    workers' environment set: a cluster's through the job's runtime env, an embedded Ray's
    through this process's environment, which every process it starts inherits."""
    import ray

    if address is None:  # "local" starts a fresh embedded Ray even when a cluster runs on this machine
        # Not as a runtime env: Ray prestarts its workers without one and never gives a task or
        # actor with a runtime env of its own such a worker, so every Tune trial started a fresh
        # process while the prestarted ones idled (measured: benchmarks/README.md).
        os.environ.update(WORKER_ENV["env_vars"])
        _inherit_tune_env()
        ray.init(address="local", include_dashboard=False, logging_level="WARNING",
                 _system_config=dict(FAST_START))  # a copy: ray.init writes its session into it
        return
    try:
        ray.init(address=address, logging_level="WARNING", runtime_env=WORKER_ENV)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; a cluster started by `ray start` uses token authentication: set RAY_AUTH_MODE=token "
                "(the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise ConfigError(f"--address: cannot join the Ray cluster at {address}: "
                          f"{str(exc).splitlines()[0][:200]}{hint}") from None


# The raylet connects to its own object store, which a thread of it starts at the same moment,
# and waits a full raylet_client_connect_timeout_milliseconds (1000) before trying again when
# the store is not listening yet (ray/common/client_connection.cc, ConnectSocketRetry). With
# the driver busy starting up beside it that race is lost most times, costing ray.init a second
# (benchmarks/README.md). Retrying ten times as often, for as long in all, keeps Ray's patience.
FAST_START = {"raylet_client_connect_timeout_milliseconds": 100, "raylet_client_num_connect_attempts": 100}


def _inherit_tune_env() -> None:
    """Tune gives its trial actors a runtime env of their own (ray/tune/execution/class_cache.py,
    Ray 2.60: PL_DISABLE_FORK=1 for PyTorch Lightning, plus any AWS_* or Ray Train variable set
    here), so they could never take a prestarted worker. Its defaults move into this process's
    environment, where an embedded Ray's workers find them all the same, for the rest of the
    process (a later sweep on a cluster from it goes without them: prunerlib's trainables use no
    Lightning). With such a variable set, trials still start workers of their own."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # another Tune: its trials just start fresh workers
        return
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):
        os.environ.update(defaults)
        defaults.clear()


def disconnect() -> None:
    """ray.shutdown, less its one-second wait on the autoscaler monitor of an embedded Ray: Ray
    stops the GCS first, and the monitor's SIGTERM handler then tries to tell the GCS it is
    going and hangs until ray.shutdown kills it a second later (Ray 2.60, ray/_private/node.py).
    The monitor holds nothing a sweep keeps, so it is killed outright first."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # None when no Ray runs here
    for info in getattr(node, "all_processes", {}).get("monitor", []):
        info.process.kill()
    ray.shutdown()


def check_local_gpu(spec: SweepSpec) -> None:
    """An embedded Ray has this machine's GPUs only: a spec asking for a GPU needs one here."""
    import torch

    if spec.gpu > 0 and not torch.cuda.is_available():
        raise SpecError(f"resources.gpu: {spec.gpu:g} GPU per trial asked for, but this machine has no GPU "
                        f"(set resources.gpu: 0, or join a GPU cluster with --address)")


# Seconds a sweep on a cluster waits for a node with the GPU share to join: after `ray up` the
# head is ready minutes before its GPU workers.
GPU_WAIT_VAR = "PRUNERLIB_GPU_WAIT_S"
GPU_WAIT_S = 120.0


def check_cluster(spec: SweepSpec, folder: SweepFolder, remote: bool, interrupted: Callable[[], bool]) -> None:
    """Refuse, before any trial starts, a sweep the cluster can never schedule or whose
    storage some node cannot see. `interrupted`: whether a signal asked the sweep to stop,
    which ends a wait for a GPU node early."""
    nodes = _wait_for_gpu(spec, interrupted) if remote and spec.gpu > 0 else _alive_nodes()
    best_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    best_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    waited = f" after waiting {_gpu_wait():g} s ({GPU_WAIT_VAR})" if remote else ""
    if spec.gpu > 0 and best_gpu == 0:
        raise SpecError(f"resources.gpu: {spec.gpu:g} GPU per trial asked for, but the Ray cluster has no GPU{waited} "
                        f"(start its GPU workers first, or set resources.gpu: 0)")
    if spec.gpu > best_gpu:
        raise SpecError(f"resources.gpu: {spec.gpu:g} GPUs per trial, but no node has more than {best_gpu:g}{waited}")
    if spec.cpu > best_cpu:
        raise SpecError(f"resources.cpu: {spec.cpu:g} CPUs per trial, but no node has more than {best_cpu:g}")
    if remote:
        _check_shared_storage(folder, nodes, spec.plugins)


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _gpu_wait() -> float:
    raw = os.environ.get(GPU_WAIT_VAR)
    try:
        wait = GPU_WAIT_S if raw is None else float(raw)
    except ValueError:
        wait = float("nan")
    if not 0 <= wait < 1e6:
        raise ConfigError(f"{GPU_WAIT_VAR}: seconds to wait for a GPU node, a number from 0, got {raw!r}")
    return wait


def _wait_for_gpu(spec: SweepSpec, interrupted: Callable[[], bool]) -> list[dict[str, Any]]:
    """The cluster's nodes once one offers the trial's GPU share, or when the wait is over."""
    wait = _gpu_wait()
    deadline = time.monotonic() + wait
    said = False
    while True:
        nodes = _alive_nodes()
        if max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0) >= spec.gpu:
            return nodes
        if time.monotonic() >= deadline or interrupted():
            return nodes
        if not said:
            print(f"waiting up to {wait:g} s for a node with {spec.gpu:g} GPU to join the Ray cluster "
                  f"(GPU workers join minutes after the head; {GPU_WAIT_VAR} sets the wait)", file=sys.stderr)
            said = True
        time.sleep(1)


def cluster_plan(spec: SweepSpec, address: str | None) -> str:
    """`--dry-run --address`: the plan on the cluster's resources and, for a GPU spec, each GPU
    node's share of it: trial slots, GPU memory, and the population sizes `members_that_fit`
    gives there (asked on the node itself, by a zero-CPU task pinned to it)."""
    import ray

    from prunerlib.sweep.plan import plan_text

    started_here = not ray.is_initialized()
    if started_here:
        connect(address)
    try:
        resources = ray.cluster_resources()
        text = plan_text(spec, resources.get("CPU", 0.0), resources.get("GPU", 0.0), held=trials_held_by_nodes(spec))
        return text + ("\n" + _gpu_plan(spec) if spec.gpu else "")
    finally:
        if started_here:
            disconnect()


def trials_held_by_nodes(spec: SweepSpec) -> int:
    """How many of the sweep's trials the cluster's nodes run side by side now: counted node by
    node, as Ray places a trial on one (a CPU-only head adds CPUs to the total but no GPU slot)."""
    from prunerlib.sweep.plan import trials_held

    return sum(trials_held(spec, n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
               for n in _alive_nodes())


def _gpu_plan(spec: SweepSpec) -> str:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from prunerlib.population import population_key
    from prunerlib.sweep.plan import trials_held

    nodes = [n for n in _alive_nodes() if n["Resources"].get("GPU", 0.0) > 0]
    if not nodes:
        return (f"GPU plan: no GPU node in the cluster yet; a sweep waits up to {_gpu_wait():g} s for one "
                f"({GPU_WAIT_VAR})")
    if spec.grid:  # one member stands for its population: they share architecture and batch size
        examples = {population_key(cfg): cfg for cfg in reversed(spec.grid)}
        populations = [(_population_name(cfg), cfg.to_dict()) for cfg in examples.values()]
    else:
        cfg = TrialConfig.from_dict(seeded(spec.fixed, spec.seeds[0]))
        populations = [("search " + _population_name(cfg), cfg.to_dict())]
    probe = ray.remote(num_cpus=0)(_probe_gpu)
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote([settings for _, settings in populations], spec.gpu, spec.plugins) for n in nodes],
                      timeout=120)
    lines = [f"GPU plan: {spec.gpu:g} GPU per Tune trial, population sizes for that share of a GPU's free memory"]
    for node, answer in zip(nodes, answers):
        have = node["Resources"]
        place = f"node {node.get('NodeManagerAddress')} ({node['NodeID'][:8]})"
        slots_here = trials_held(spec, have.get("CPU", 0.0), have["GPU"])
        if "error" in answer:
            lines.append(f"  {place}: {have['GPU']:g} GPU(s), {slots_here} trial slot(s), but torch there cannot use "
                         f"them: {answer['error']}")
            continue
        lines.append(f"  {place}: {have['GPU']:g} GPU(s) {answer['name']}, {answer['free'] / 2**30:.1f} of "
                     f"{answer['total'] / 2**30:.1f} GiB free; {slots_here} trial slot(s)")
        lines.extend(f"      {name}: up to {size} member(s) per population"
                     for (name, _), size in zip(populations, answer["sizes"]))
    return "\n".join(lines)


def _population_name(cfg: TrialConfig) -> str:
    shape = f"hidden {cfg.hidden}" if cfg.model == "ffn" else "channels " + ",".join(map(str, cfg.conv_channels))
    return f"{cfg.dataset} {cfg.model} ({shape}, batch {cfg.batch_size})"


def _probe_gpu(settings: list[dict[str, Any]], share: float, plugin_files: tuple[str, ...] = ()) -> dict[str, Any]:
    """On a GPU node, with no GPU reserved (Ray 2.60 leaves the node's GPUs visible to a task
    given none): its first GPU's memory and the population sizes for a trial's share of it."""
    import torch

    from prunerlib import plugins
    from prunerlib.devices import cuda_unusable
    from prunerlib.population import members_that_fit

    if not torch.cuda.is_available():
        return {"error": cuda_unusable()}
    plugins.load(plugin_files)  # the settings below may name a plugin's pruner
    free, total = torch.cuda.mem_get_info(0)
    return {"name": torch.cuda.get_device_name(0), "free": free, "total": total,
            "sizes": [members_that_fit(TrialConfig.from_dict(s), torch.device("cuda", 0), gpu_share=share)
                      for s in settings]}


def _check_shared_storage(folder: SweepFolder, nodes: list[dict[str, Any]], plugin_files: tuple[str, ...]) -> None:
    """Every node must see the sweep folder and the spec's plugin files at the same paths: a
    node that cannot would fail each trial it is given, after Tune's retries."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = folder.root / f".storage-check-{uuid.uuid4().hex}"
    marker.write_text("visible")

    @ray.remote(num_cpus=0)
    def missing(paths: list[str]) -> list[str]:
        return [path for path in paths if not os.path.exists(path)]

    try:
        checks = [missing.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                  .remote([str(marker), *plugin_files]) for node in nodes]
        answers = [(f"{node['NodeID'][:8]} ({node.get('NodeManagerAddress')})", ray.get(ref, timeout=120))
                   for node, ref in zip(nodes, checks)]
    finally:
        marker.unlink(missing_ok=True)
    blind = [name for name, gone in answers if str(marker) in gone]
    if blind:
        raise SpecError(f"storage: {folder.root.parent} is not visible from node(s) {', '.join(blind)}; a multi-node "
                        f"sweep needs a folder every node shares (an NFS mount, say) at the same path")
    for name, gone in answers:
        if gone:
            raise SpecError(f"plugins: {gone[0]} is not on node {name}; put plugin files on storage every node "
                            f"shares, at the same path")
