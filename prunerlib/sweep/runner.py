"""Run a sweep on Ray Tune: packs of trial configurations as Tune trials, a grid through Tune,
a search through Optuna, on an embedded local Ray or an existing cluster.

The sweep folder is the record: packs.json (the plan), one Parquet file per finished
configuration, the Optuna journal. Resuming starts a fresh Tuner over what they say is left,
never Tune's saved state, so a lost or unreadable trial file is simply run again. Before it
exits, the driver compares the rows with the plan: a shortfall, or a signal, is a non-zero
exit code and the one command that continues the sweep.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.stopper import Stopper

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError, PrunerlibError
from prunerlib.pipeline import Workdirs, failed_rows, identity_columns, resolve_device
from prunerlib.population import run_pack
from prunerlib.sweep.plan import grid_packs, search_batch, slots
from prunerlib.sweep.search import POINTS, VALUES, BatchedOptunaSearch
from prunerlib.sweep.spec import SpecError, SweepSpec, seeded
from prunerlib.sweep.store import SweepFolder
from prunerlib.sweep.summary import summarise

# What every Tune trial reports (means over its pack's finished configurations), besides the
# search objectives: enough for Tune's console table to show how the sweep is going.
REPORTED = ("acc_finetuned", "units_removed_frac", "weights_removed_frac", "filters_removed_frac")


@dataclass(frozen=True)
class SweepContext:
    """What a Tune trial needs besides its own parameters; shipped to the workers once."""

    name: str
    storage: str
    fixed: dict[str, Any]
    seeds: tuple[int, ...]
    packs: dict[str, tuple[dict[str, Any], ...]]  # grid: pack label -> member settings
    objectives: tuple[str, ...]  # search: the metrics each point is told
    threads: int
    gpu_share: float  # of one GPU's memory, for sizing populations
    rerun: frozenset[str] = frozenset()  # --retry-failed: ids whose rows are replaced

    def members(self, params: dict[str, Any]) -> list[TrialConfig]:
        if "pack" in params:
            return [TrialConfig.from_dict(settings) for settings in self.packs[params["pack"]]]
        return [TrialConfig.from_dict({**seeded(self.fixed, s), **point}) for point in params[POINTS]
                for s in self.seeds]


def pack_trial(params: dict[str, Any], ctx: SweepContext) -> None:
    """One Tune trial: run the pack's unfinished configurations as a population, keep each
    one's rows in the sweep folder, report the pack's means (and each search point's
    objective values) to Tune.

    An environment fault (a lost file system, no memory, a GPU torch cannot use, a broken CUDA
    context) propagates, so Tune retries the trial (`max_failures`); the members that finished
    before it have their rows written already. Tune never reuses the actor of a trial that
    raised (TuneController._schedule_trial_stop caches an actor only when there is no
    exception): it is stopped and its worker process ends, so a sticky
    torch.AcceleratorError cannot poison the packs after it.

    `device: auto` means the GPU Ray assigned this trial, or the CPU when it was given none:
    Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for a trial with no GPU
    (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO), so torch there sees GPUs that other trials hold. The
    resolved device goes to run_pack beside the configuration, whose hash stays as written."""
    import ray
    import torch
    from ray import tune

    torch.set_num_threads(ctx.threads)
    folder = SweepFolder(ctx.storage, ctx.name)
    node = ray.get_runtime_context().get_node_id()
    members = ctx.members(params)
    ids = [cfg.config_hash() for cfg in members]
    rows = {tid: None if tid in ctx.rerun else folder.rows(tid) for tid in ids}
    todo = [(cfg, tid) for cfg, tid in zip(members, ids) if rows[tid] is None]

    def keep(index: int, member_rows: list[dict[str, Any]]) -> None:
        tid = todo[index][1]
        rows[tid] = [row | {"node_id": node} for row in member_rows]
        folder.write_rows(tid, rows[tid])

    if todo:
        dirs = Workdirs(pretrained=folder.pretrained)
        cfgs, tids = [cfg for cfg, _ in todo], [tid for _, tid in todo]
        # One device setting per pack: grid packs are populations (device is shared), and a
        # search's device is fixed (spec.py).
        device = resolve_device(cfgs[0].device, ray.get_gpu_ids())
        try:
            run_pack(cfgs, dirs, sweep=ctx.name, trial_ids=tids, gpu_share=ctx.gpu_share, on_member_done=keep,
                     device=device)
        except PrunerlibError as exc:  # unusable data on this node: a result too, and the sweep goes on
            for index, (cfg, tid) in enumerate(todo):
                if rows[tid] is None:
                    keep(index, failed_rows(identity_columns(cfg, ctx.name, tid), exc))
    finals = [rows[tid][-1] for tid in ids]
    ok = [row for row in finals if row["status"] == "ok"]
    report = {metric: _mean(row.get(metric) for row in ok) for metric in (*ctx.objectives, *REPORTED)}
    if POINTS in params:  # each point's objectives: the mean over its seeds
        per_point = [finals[i: i + len(ctx.seeds)] for i in range(0, len(finals), len(ctx.seeds))]
        report[VALUES] = [[_mean(r.get(m) for r in point if r["status"] == "ok") for m in ctx.objectives]
                          for point in per_point]
    tune.report({**report, "configs_ok": len(ok), "configs_failed": len(finals) - len(ok)})


def _mean(values: Any) -> float:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


# --------------------------------------------------------------------------------------------
# Ctrl-C or a SIGTERM (a batch scheduler's pre-emption) stops the sweep like a crash would,
# but says so: the driver lets Tune end its trials, consolidates what finished, and exits
# 128 + the signal's number. Tune's own SIGINT handler is off (it would end the sweep and
# return as if it had finished); this flag, read by a Stopper, replaces it.
_SIGNALLED: list[int] = []


class _StopOnSignal(Stopper):
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(_SIGNALLED)

    def stop_all(self) -> bool:
        return bool(_SIGNALLED)


def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
    if not _SIGNALLED:
        print(f"{signal.Signals(signum).name} received: stopping the sweep's trials...", file=sys.stderr)
    _SIGNALLED.append(signum)


def _catch_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_signal)


def run_sweep(spec: SweepSpec, storage: str, address: str | None = None, resume: bool = False,
              retry_failed: bool = False, resume_command: str | None = None) -> int:
    """Run (or resume) the sweep; print where the results are and a summary. Exit code: 0 when
    every planned configuration has rows (failed trials included), 1 when some have none,
    128 + N after signal N; the last two print the command that continues the sweep."""
    import ray

    folder = SweepFolder(storage, spec.name)
    again = resume_command or f"prunerlib sweep SPEC --storage {folder.root.parent} --resume"
    started_here = not ray.is_initialized()
    if started_here and address is None and spec.gpu > 0:  # an embedded Ray has this machine's GPUs only
        import torch

        if not torch.cuda.is_available():
            raise SpecError(f"resources.gpu: {spec.gpu:g} GPU per trial asked for, but this machine has no GPU "
                            f"(set resources.gpu: 0, or join a GPU cluster with --address)")
    if retry_failed and not resume:
        raise SpecError("--retry-failed: only with --resume (a new sweep has nothing to retry)")
    if retry_failed and spec.search:
        raise SpecError("--retry-failed: a search's failed points are results its sampler has seen; "
                        "retry them in a grid sweep of those settings")
    folder.begin(spec, resume)
    _SIGNALLED.clear()
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _catch_signals()
    try:
        if started_here:
            _connect(address)
        _catch_signals()  # again: ray.init installs its own SIGTERM handler
        _check_cluster(spec, folder, remote=address is not None)
        if spec.search and resume:
            _reconcile_study(spec, folder)
        tuner = None if _SIGNALLED else _tuner(spec, folder, resume, retry_failed)
        crashed = False
        if tuner is not None:
            try:
                _say_errors(tuner.fit(), spec)
            except Exception as exc:  # noqa: BLE001  the rows that finished are still the record: keep them
                crashed = True
                print(f"the sweep's driver failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                      file=sys.stderr)
        if spec.search:  # a journal damaged during the run is told what the trial files hold
            _reconcile_study(spec, folder, hand_out=False)
        frame = folder.consolidate()
        print(summarise(frame, spec))
        print(f"results: {folder.results}")
        code = _verdict(spec, folder, frame, again)
        if crashed and code == 0:
            print(f"every configuration has rows, but check {folder.tune} for the driver's error", file=sys.stderr)
        return code or int(crashed)
    except KeyboardInterrupt:  # a signal before the handlers were in place
        _SIGNALLED.append(signal.SIGINT)
        print(f"interrupted; continue with: {again}", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        folder.release()
        if started_here:
            ray.shutdown()
        for signum in (signal.SIGINT, signal.SIGTERM):
            if threading.current_thread() is threading.main_thread():
                signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


def _say_errors(grid: Any, spec: SweepSpec) -> None:
    """One line per Tune trial that errored after its retries: what failed, where, and why
    (Tune's console shows only its error file's path)."""
    for result in grid:
        exc = result.error
        if exc is None:
            continue
        while getattr(exc, "cause", None) is not None:  # RayTaskError wraps what the trial raised
            exc = exc.cause
        what = (result.config or {}).get("pack") or "search points"
        message = " ".join(str(exc).split())[:300]
        print(f"Tune trial {what!r} errored after {spec.max_failures} retr{'y' if spec.max_failures == 1 else 'ies'}: "
              f"{type(exc).__name__}: {message}", file=sys.stderr)


def _verdict(spec: SweepSpec, folder: SweepFolder, frame: Any, again: str) -> int:
    """Compare what the sweep folder holds with the plan: the exit code and its one line."""
    if spec.grid:  # the spec is the one the sweep started with (SweepFolder.begin checks)
        ids = {cfg.config_hash() for cfg in spec.grid}
        planned, have = len(ids), len(ids & set(frame["trial_id"]))  # results.parquet may hold more
    else:
        from prunerlib.sweep.search import planned_points

        planned = planned_points(spec.search, spec.name, str(folder.journal)) * len(spec.seeds)
        have = frame["trial_id"].nunique() if len(frame) else 0
    if _SIGNALLED:
        name = signal.Signals(_SIGNALLED[0]).name
        print(f"interrupted by {name}: {have} of {planned} configuration(s) have rows; continue with: {again}",
              file=sys.stderr)
        return 128 + _SIGNALLED[0]
    if have < planned:
        print(f"incomplete: {planned - have} of {planned} configuration(s) have no rows (see {folder.tune} "
              f"for Tune's errors); continue with: {again}", file=sys.stderr)
        return 1
    # An error row is a fault in the code, not what the configuration does: never a finished sweep.
    errors = frame[frame["final"] & (frame["status"] == "error")]["trial_id"].nunique() if len(frame) else 0
    if errors:
        retry = f"; once the code is fixed, rerun them with: {again} --retry-failed" if spec.grid else ""
        print(f"{errors} configuration(s) ended in an error, a fault in the code rather than a result "
              f"(the error column of {folder.results} has the traceback){retry}", file=sys.stderr)
        return 1
    return 0


def _reconcile_study(spec: SweepSpec, folder: SweepFolder, hand_out: bool = True) -> None:
    """The trial files are the record of what ran; a journal cut short (a full disk, a crash
    mid-write) or deleted has lost some of it. Tell the study again every point whose rows are
    all there, and hand out again (as a RUNNING trial) one whose rows are partly there, so the
    journal and the trial files agree at the end."""
    import optuna

    from prunerlib.sweep.search import distributions, open_study

    search = spec.search
    assert search is not None
    keys = list(search.space)
    points: dict[str, list[dict[str, Any]]] = {}
    params_of: dict[str, dict[str, Any]] = {}
    for rows in folder.finished().values():
        settings = json.loads(rows[-1]["config_json"])
        point = {k: settings[k] for k in keys}
        key = json.dumps(point, sort_keys=True)
        points.setdefault(key, []).append(rows[-1])
        params_of[key] = point
    try:
        study = open_study(search, spec.name, str(folder.journal))
    except ValueError:  # a line cut short mid-file (a full disk, then appends): keep what parses
        _keep_readable_journal(folder.journal)
        study = open_study(search, spec.name, str(folder.journal))
    space = distributions(search)
    if any(t.state.is_finished() and set(t.params) != set(keys) for t in study.get_trials(deepcopy=False)):
        # A finished trial whose settings the journal lost cannot be matched to its rows, and a
        # study cannot forget a trial: start the study again from the trial files.
        aside = folder.journal.with_name(folder.journal.name + ".replaced")
        os.replace(folder.journal, aside)
        print(f"{folder.journal} held finished points without their settings: rebuilt it from the trial files "
              f"(the old one is {aside.name})", file=sys.stderr)
        study = open_study(search, spec.name, str(folder.journal))
    by_key: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        by_key.setdefault(json.dumps({k: trial.params.get(k) for k in keys}, sort_keys=True), []).append(trial)
    told, reasked = 0, 0
    objectives = [m for m, _ in search.objectives]
    for key, finals in points.items():
        known = by_key.get(key, [])
        if any(t.state.is_finished() for t in known):
            continue
        running = [t for t in known if t.state == optuna.trial.TrialState.RUNNING]
        if len(finals) < len(spec.seeds):
            if not running and hand_out:  # the sampler asked it, the journal forgot it: ask it again
                study.add_trial(optuna.trial.create_trial(params=params_of[key], distributions=space,
                                                          state=optuna.trial.TrialState.RUNNING))
                reasked += 1
            continue
        ok = [r for r in finals if r["status"] == "ok"]
        values = [_mean(r.get(m) for r in ok) for m in objectives]
        failed = not ok or any(math.isnan(v) for v in values)
        if running:
            study.tell(running[0].number, None if failed else values,
                       state=optuna.trial.TrialState.FAIL if failed else None, skip_if_finished=True)
        else:
            study.add_trial(optuna.trial.create_trial(
                params=params_of[key], distributions=space,
                state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
                values=None if failed else values))
        told += 1
    if told or reasked:
        print(f"{folder.journal.name} had lost {told + reasked} point(s) the trial files hold: told the study "
              f"{told} again from their rows" + (f", handed out {reasked} unfinished one(s) again" if reasked else ""))


# cuBLAS reads this once, when CUDA starts in a worker: `exact: true` trials need it there
# before their first CUDA call (training.set_numerics refuses an exact trial without it).
_WORKER_ENV = {"env_vars": {"CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")}}


def _connect(address: str | None) -> None:
    import ray

    if address is None:  # "local" starts a fresh embedded Ray even when a cluster runs on this machine
        ray.init(address="local", include_dashboard=False, logging_level="WARNING", runtime_env=_WORKER_ENV)
        return
    try:
        ray.init(address=address, logging_level="WARNING", runtime_env=_WORKER_ENV)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; a cluster started by `ray start` uses token authentication: set RAY_AUTH_MODE=token "
                "(the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise ConfigError(f"--address: cannot join the Ray cluster at {address}: "
                          f"{str(exc).splitlines()[0][:200]}{hint}") from None


def _tuner(spec: SweepSpec, folder: SweepFolder, resume: bool, retry_failed: bool = False):  # noqa: ANN202
    """A Tuner over the work left. A resumed sweep never restores Tune's saved state: that state
    cannot rerun a trial it saw finish (whose rows may since have been lost) and is the first
    thing a full disk leaves inconsistent. packs.json, the trial files and the Optuna journal
    are the record; a fresh Tuner over the packs with configurations left rebuilds from them."""
    import ray
    from ray import tune

    resources = ray.cluster_resources()
    parallel = slots(spec, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
    # A resumed sweep keeps the packs it started with, whatever the cluster now offers.
    packs = folder.packs() if resume else None
    if packs is None:
        packs = {p.label: tuple(cfg.to_dict() for cfg in p.members) for p in grid_packs(spec, parallel)} \
            if spec.grid else {}
        folder.save_packs(packs)
    finished = folder.finished() if resume else {}
    rerun = frozenset(tid for tid, rows in finished.items() if rows[-1]["status"] != "ok") if retry_failed else frozenset()
    ctx = SweepContext(
        name=spec.name, storage=str(folder.root.parent), fixed=spec.fixed, seeds=spec.seeds,
        packs=packs,
        objectives=tuple(m for m, _ in spec.search.objectives) if spec.search else (),
        threads=max(1, int(spec.cpu)), gpu_share=min(1.0, spec.gpu) if spec.gpu else 1.0,
        rerun=rerun,
    )
    trainable = tune.with_resources(tune.with_parameters(pack_trial, ctx=ctx), {"cpu": spec.cpu, "gpu": spec.gpu})
    run_config = tune.RunConfig(
        name=folder.tune.name, storage_path=str(folder.root), stop=_StopOnSignal(),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    if spec.search:
        searcher = BatchedOptunaSearch(spec.search, spec.name, str(folder.journal), search_batch(spec, parallel))
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=parallel,
                                      reuse_actors=True)
        return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    todo = [label for label, members in packs.items()
            if any((tid := TrialConfig.from_dict(m).config_hash()) not in finished or tid in rerun for m in members)]
    if resume:
        total = sum(len(members) for members in packs.values())
        print(f"resuming from {folder.plan.name} and {len(finished)} trial file(s) of {total} configuration(s): "
              f"{len(todo)} of {len(packs)} pack(s) to run" + (f", {len(rerun)} failed configuration(s) again"
                                                               if retry_failed else ""))
    if not todo:
        return None
    tune_config = tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True)
    return tune.Tuner(trainable, param_space={"pack": tune.grid_search(todo)},
                      tune_config=tune_config, run_config=run_config)


def _keep_readable_journal(journal: Path) -> None:
    aside = journal.with_name(journal.name + ".corrupt")
    os.replace(journal, aside)
    good = []
    for line in aside.read_bytes().splitlines(keepends=True):
        try:
            json.loads(line)
        except ValueError:
            break
        if not line.endswith(b"\n"):
            break
        good.append(line)
    journal.write_bytes(b"".join(good))
    print(f"{journal} was unreadable after line {len(good)}: kept those lines, moved the file aside to {aside.name}",
          file=sys.stderr)


# Seconds a sweep on a cluster waits for a node with the GPU share to join: after `ray up` the
# head is ready minutes before its GPU workers.
GPU_WAIT_VAR = "PRUNERLIB_GPU_WAIT_S"
GPU_WAIT_S = 120.0


def _check_cluster(spec: SweepSpec, folder: SweepFolder, remote: bool) -> None:
    """Refuse, before any trial starts, a sweep the cluster can never schedule or whose
    storage some node cannot see."""
    nodes = _wait_for_gpu(spec) if remote and spec.gpu > 0 else _alive_nodes()
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
        _check_shared_storage(folder, nodes)


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


def _wait_for_gpu(spec: SweepSpec) -> list[dict[str, Any]]:
    """The cluster's nodes once one offers the trial's GPU share, or when the wait is over."""
    wait = _gpu_wait()
    deadline = time.monotonic() + wait
    said = False
    while True:
        nodes = _alive_nodes()
        if max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0) >= spec.gpu:
            return nodes
        if time.monotonic() >= deadline or _SIGNALLED:
            return nodes
        if not said:
            print(f"waiting up to {wait:g} s for a node with {spec.gpu:g} GPU to join the Ray cluster "
                  f"(GPU workers join minutes after the head; {GPU_WAIT_VAR} sets the wait)", file=sys.stderr)
            said = True
        time.sleep(1)


def cluster_plan(spec: SweepSpec, address: str | None) -> str:
    """`--dry-run --address`: the plan on the cluster's resources and, for a GPU spec, each GPU
    node's share of it: trial slots, GPU memory, and the population sizes `pack_size_for`
    gives there (asked on the node itself, by a zero-CPU task pinned to it)."""
    import ray

    from prunerlib.sweep.plan import plan_text

    started_here = not ray.is_initialized()
    if started_here:
        _connect(address)
    try:
        resources = ray.cluster_resources()
        text = plan_text(spec, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
        return text + ("\n" + _gpu_plan(spec) if spec.gpu else "")
    finally:
        if started_here:
            ray.shutdown()


def _gpu_plan(spec: SweepSpec) -> str:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from prunerlib.population import population_key

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
                       .remote([settings for _, settings in populations], spec.gpu) for n in nodes], timeout=120)
    lines = [f"GPU plan: {spec.gpu:g} GPU per Tune trial, population sizes for that share of a GPU's free memory"]
    for node, answer in zip(nodes, answers):
        have = node["Resources"]
        place = f"node {node.get('NodeManagerAddress')} ({node['NodeID'][:8]})"
        slots_here = int(min(have.get("CPU", 0.0) // spec.cpu, have["GPU"] // spec.gpu))
        if "error" in answer:
            lines.append(f"  {place}: {have['GPU']:g} GPU(s), but torch there cannot use them: {answer['error']}")
            continue
        lines.append(f"  {place}: {have['GPU']:g} GPU(s) {answer['name']}, {answer['free'] / 2**30:.1f} of "
                     f"{answer['total'] / 2**30:.1f} GiB free; {slots_here} trial slot(s)")
        lines.extend(f"      {name}: up to {size} member(s) per population"
                     for (name, _), size in zip(populations, answer["sizes"]))
    return "\n".join(lines)


def _population_name(cfg: TrialConfig) -> str:
    shape = f"hidden {cfg.hidden}" if cfg.model == "ffn" else "channels " + ",".join(map(str, cfg.conv_channels))
    return f"{cfg.dataset} {cfg.model} ({shape}, batch {cfg.batch_size})"


def _probe_gpu(settings: list[dict[str, Any]], share: float) -> dict[str, Any]:
    """On a GPU node, with no GPU reserved (Ray 2.60 leaves the node's GPUs visible to a task
    given none): its first GPU's memory and the population sizes for a trial's share of it."""
    import torch

    from prunerlib.pipeline import cuda_unusable
    from prunerlib.population import pack_size_for

    if not torch.cuda.is_available():
        return {"error": cuda_unusable()}
    free, total = torch.cuda.mem_get_info(0)
    return {"name": torch.cuda.get_device_name(0), "free": free, "total": total,
            "sizes": [pack_size_for(TrialConfig.from_dict(s), torch.device("cuda", 0), gpu_share=share)
                      for s in settings]}
def _check_shared_storage(folder: SweepFolder, nodes: list[dict[str, Any]]) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = folder.root / f".storage-check-{uuid.uuid4().hex}"
    marker.write_text("visible")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        checks = {
            node["NodeID"]: sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(str(marker))
            for node in nodes
        }
        blind = [f"{node_id[:8]} ({node.get('NodeManagerAddress')})" for (node_id, ref), node in zip(checks.items(), nodes)
                 if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise SpecError(f"storage: {folder.root.parent} is not visible from node(s) {', '.join(blind)}; a multi-node "
                        f"sweep needs a folder every node shares (an NFS mount, say) at the same path")
