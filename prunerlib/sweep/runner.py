"""Run a sweep on Ray Tune: packs of trial configurations as Tune trials, a grid through Tune,
a search through Optuna, on an embedded local Ray or an existing cluster.

The sweep folder is the record: packs.json (the plan), one Parquet file per finished
configuration, the Optuna journal. Resuming starts a fresh Tuner over what they say is left,
never Tune's saved state, so a lost or unreadable trial file is simply run again. Before it
exits, the driver compares the rows with the plan: a shortfall, or a signal, is a non-zero
exit code and the one command that continues the sweep.

What runs inside each Tune trial is in `trainable`; joining and checking the cluster in `cluster`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prunerlib.config import TrialConfig
from prunerlib.files import atomic_write
from prunerlib.sweep import signals
from prunerlib.sweep.cluster import check_cluster, check_local_gpu, connect, disconnect, trials_held_by_nodes
from prunerlib.sweep.loggers import RunLoggers
from prunerlib.sweep.plan import grid_packs, planned, search_batch, slots
from prunerlib.sweep.search import BatchedOptunaSearch
from prunerlib.sweep.spec import SpecError, SweepSpec
from prunerlib.sweep.store import SweepFolder
from prunerlib.sweep.summary import sweep_summary
from prunerlib.sweep.trainable import SweepContext, mean_present, pack_trial


# PRUNERLIB_TIMINGS=1: the driver prints `prunerlib-timing <phase> <unix time>` to stderr as each
# phase of the sweep ends (benchmarks/end_to_end.py reads them for its breakdown).
_TIMINGS = os.environ.get("PRUNERLIB_TIMINGS") == "1"


def _mark(phase: str) -> None:
    if _TIMINGS:
        print(f"prunerlib-timing {phase} {time.time():.3f}", file=sys.stderr, flush=True)


def run_sweep(spec: SweepSpec, storage: str, address: str | None = None, resume: bool = False,
              retry_failed: bool = False, resume_command: str | None = None) -> int:
    """Run (or resume) the sweep; print where the results are and a summary. Exit code: 0 when
    every planned configuration has rows (failed trials included), 1 when some have none,
    128 + N after signal N; the last two print the command that continues the sweep."""
    import ray

    folder = SweepFolder(storage, spec.name)
    again = resume_command or f"prunerlib sweep SPEC --storage {folder.root.parent} --resume"
    if spec.kind == "sensitivity":  # a scan's units instead of packs; the same folder rules and exit codes
        from prunerlib.sweep.sensitivity import run_scan

        return run_scan(spec, storage, address, resume, retry_failed, again)
    started_here = not ray.is_initialized()
    if started_here and address is None:
        check_local_gpu(spec)
    if retry_failed and not resume:
        raise SpecError("--retry-failed: only with --resume (a new sweep has nothing to retry)")
    if retry_failed and spec.search:
        raise SpecError("--retry-failed: a search's failed points are results its sampler has seen; "
                        "retry them in a grid sweep of those settings")
    _mark("driver_ready")
    folder.begin(spec, resume)
    signals.begin()
    stop_ahead = threading.Event()
    try:
        if started_here and address is None and not spec.gpu and spec.grid:
            _pretrain_ahead(spec, folder, stop_ahead)
        if started_here:
            connect(address)
        signals.catch()  # again: ray.init installs its own SIGTERM handler
        _mark("ray_ready")
        check_cluster(spec, folder, remote=address is not None, interrupted=signals.interrupted)
        if spec.search and resume:
            _reconcile_study(spec, folder)
        tuner = None if signals.interrupted() else _tuner(spec, folder, resume, retry_failed)
        crashed = False
        _mark("tuner_built")
        if tuner is not None:
            try:
                say_errors(tuner.fit(), spec)
            except Exception as exc:  # noqa: BLE001  the rows that finished are still the record: keep them
                crashed = True
                print(f"the sweep's driver failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                      file=sys.stderr)
        if spec.search:  # a journal damaged during the run is told what the trial files hold
            _reconcile_study(spec, folder, hand_out=False)
        _mark("fit_done")
        # Ray is not needed past here, and its shutdown mostly waits for its processes to exit:
        # consolidate meanwhile.
        with ThreadPoolExecutor(1) as pool:
            consolidating = pool.submit(folder.consolidate)
            if started_here:
                disconnect()
                _mark("ray_shut_down")
            frame = consolidating.result()
        _mark("consolidated")
        print(sweep_summary(frame, spec))
        print(f"results: {folder.results}")
        models = list(folder.models.glob("*.pt")) if folder.models.is_dir() else []
        if models:
            size = sum(m.stat().st_size for m in models) / 2**20
            print(f"models: {folder.models} ({len(models)} compacted model(s), {size:.1f} MB; prunerlib.load_pruned)")
        if "tensorboard" in spec.callbacks:
            print(f"tensorboard: {folder.root / 'tensorboard'} (one run per configuration; "
                  f"pip install tensorboard, then tensorboard --logdir {folder.root / 'tensorboard'})")
        code = _verdict(spec, folder, frame, again)
        _mark("summarised")
        if crashed and code == 0:
            print(f"every configuration has rows, but check {folder.tune} for the driver's error", file=sys.stderr)
        return code or int(crashed)
    except KeyboardInterrupt:  # a signal before the handlers were in place
        signals.RECEIVED.append(signal.SIGINT)
        print(f"interrupted; continue with: {again}", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        stop_ahead.set()  # at its next model: one it is writing is renamed into place or cleaned up later
        folder.release()
        if started_here:
            disconnect()  # nothing to do when the sweep ran to its end
        signals.release()


def _pretrain_ahead(spec: SweepSpec, folder: SweepFolder, stop: threading.Event) -> None:
    """Pretrain a local CPU grid's first models on the driver, in a thread, while Ray starts and
    its workers import: cores that would idle for seconds. The packs then find them in the store
    (or wait on the locks of those being trained), and a model is the same whoever trains it:
    the store key holds everything that makes it, the driver uses a trial's threads and
    numerics, and build_model seeds it. Only here: a cluster's or a GPU sweep's models are
    trained on its workers, on their device type.

    Pack by pack in the order Tune starts them, each pack's models together as it would train
    them (population.pretrain_models). Whatever fails here is left to the pack that needs it,
    which records it."""
    import torch

    from prunerlib.datasets import load_data
    from prunerlib.devices import resolve_device
    from prunerlib.pretrained import load_or_pretrain_many
    from prunerlib.training import set_numerics

    parallel = slots(spec, float(os.cpu_count() or 1), 0.0)  # a local CPU sweep: this machine's cores
    packs: list[list[TrialConfig]] = []
    # The first round's packs only (Tune starts the grid's trials in order): later rounds pretrain
    # their own models in their slots, and a driver still training would slow Tune's own loop.
    for pack in grid_packs(spec, parallel)[:parallel]:
        firsts: dict[str, TrialConfig] = {}
        for cfg in pack.members:
            firsts.setdefault(cfg.pretrain_key(), cfg)
        packs.append(list(firsts.values()))

    def run() -> None:
        torch.set_num_threads(max(1, int(spec.cpu)))  # what pack_trial sets
        for cfgs in packs:
            if stop.is_set() or signals.interrupted():
                return
            try:
                device = resolve_device(cfgs[0].device, [])
                set_numerics(device, cfgs[0].exact)
                load_or_pretrain_many(cfgs, load_data(cfgs[0]), folder.pretrained, device, progress=False)
            except Exception:  # noqa: BLE001, S112  the pack that needs the model tries again and keeps the row
                continue

    threading.Thread(target=run, name="prunerlib-pretrain-ahead", daemon=True).start()


def say_errors(grid: Any, spec: SweepSpec) -> None:
    """One line per Tune trial that errored after its retries: what failed (its pack, scan unit
    or search points), and why (Tune's console shows only its error file's path)."""
    for result in grid:
        exc = result.error
        if exc is None:
            continue
        while getattr(exc, "cause", None) is not None:  # RayTaskError wraps what the trial raised
            exc = exc.cause
        config = result.config or {}
        what = config.get("pack") or config.get("unit") or "search points"
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
    if signals.interrupted():
        name = signal.Signals(signals.RECEIVED[0]).name
        print(f"interrupted by {name}: {have} of {planned} configuration(s) have rows; continue with: {again}",
              file=sys.stderr)
        return 128 + signals.RECEIVED[0]
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

    from prunerlib.sweep.search import distributions, open_study, point_trial_ids

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

    def attrs(point: dict[str, Any]) -> dict[str, Any]:  # as BatchedOptunaSearch.suggest gives them
        return {"trial_ids": point_trial_ids(spec.fixed, spec.seeds, point), "seeds": list(spec.seeds)}

    for key, finals in points.items():
        known = by_key.get(key, [])
        if any(t.state.is_finished() for t in known):
            continue
        running = [t for t in known if t.state == optuna.trial.TrialState.RUNNING]
        if len(finals) < len(spec.seeds):
            if not running and hand_out:  # the sampler asked it, the journal forgot it: ask it again
                study.add_trial(optuna.trial.create_trial(params=params_of[key], distributions=space,
                                                          state=optuna.trial.TrialState.RUNNING,
                                                          user_attrs=attrs(params_of[key])))
                reasked += 1
            continue
        ok = [r for r in finals if r["status"] == "ok"]
        values = [mean_present(r.get(m) for r in ok) for m in objectives]
        failed = not ok or any(math.isnan(v) for v in values)
        if running:
            study.tell(running[0].number, None if failed else values,
                       state=optuna.trial.TrialState.FAIL if failed else None, skip_if_finished=True)
        else:
            study.add_trial(optuna.trial.create_trial(
                params=params_of[key], distributions=space, user_attrs=attrs(params_of[key]),
                state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
                values=None if failed else values))
        told += 1
    if told or reasked:
        print(f"{folder.journal.name} had lost {told + reasked} point(s) the trial files hold: told the study "
              f"{told} again from their rows" + (f", handed out {reasked} unfinished one(s) again" if reasked else ""))


def _tuner(spec: SweepSpec, folder: SweepFolder, resume: bool, retry_failed: bool = False):  # noqa: ANN202
    """A Tuner over the work left. A resumed sweep never restores Tune's saved state: that state
    cannot rerun a trial it saw finish (whose rows may since have been lost) and is the first
    thing a full disk leaves inconsistent. packs.json, the trial files and the Optuna journal
    are the record; a fresh Tuner over the packs with configurations left rebuilds from them."""
    from ray import tune

    # Counted node by node, as Ray places a trial on one node (a GPU-less head's CPUs hold no GPU
    # trial); max_concurrent, when set, queues that many whatever the nodes hold now, so an
    # autoscaler sees the rest as demand.
    parallel = planned(spec, trials_held_by_nodes(spec))
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
        rerun=rerun, plugins=spec.plugins, save_models=spec.save_models, latency_batch=spec.latency_batch,
    )
    trainable = tune.with_resources(tune.with_parameters(pack_trial, ctx=ctx), {"cpu": spec.cpu, "gpu": spec.gpu})
    run_config = tune.RunConfig(
        name=folder.tune.name, storage_path=str(folder.root), stop=signals.StopOnSignal(),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[RunLoggers(spec.callbacks, str(folder.root.parent), spec.name)] if spec.callbacks else None,
    )
    if spec.search:
        searcher = BatchedOptunaSearch(spec.search, spec.name, str(folder.journal), search_batch(spec, parallel),
                                       spec.fixed, spec.seeds)
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=parallel,
                                      reuse_actors=True)
        return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    todo = [label for label, members in packs.items()
            if any((tid := TrialConfig.from_dict(m).config_hash()) not in finished or tid in rerun for m in members)]
    if resume:
        total = sum(len(members) for members in packs.values())
        print(f"resuming from {folder.packs_file.name} and {len(finished)} trial file(s) of {total} configuration(s): "
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
    # A crash here must not leave a half-written journal that is again unreadable.
    atomic_write(journal, lambda tmp: tmp.write_bytes(b"".join(good)))
    print(f"{journal} was unreadable after line {len(good)}: kept those lines, moved the file aside to {aside.name}",
          file=sys.stderr)
