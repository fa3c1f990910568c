"""Run a sweep on Ray Tune: packs of trial configurations as Tune trials, a grid through Tune,
a search through Optuna, on an embedded local Ray or an existing cluster.

Resuming works at two levels. Tune's own experiment state (`Tuner.restore`) brings back the
trial list and the Optuna searcher; below it, a configuration whose rows are already in the
sweep folder is never run again, so a Tune trial restarted after the driver died finishes at
once and no finished configuration is lost or run twice.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError, PrunerlibError
from prunerlib.pipeline import Workdirs, failed_rows, identity_columns, run_trial
from prunerlib.sweep.plan import grid_packs
from prunerlib.sweep.spec import Range, SpecError, SweepSpec
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
    metrics: tuple[str, ...]
    threads: int

    def members(self, params: dict[str, Any]) -> list[TrialConfig]:
        if "pack" in params:
            return [TrialConfig.from_dict(settings) for settings in self.packs[params["pack"]]]
        return [TrialConfig.from_dict({**self.fixed, **params, "seed": s}) for s in self.seeds]


def pack_trial(params: dict[str, Any], ctx: SweepContext) -> None:
    """One Tune trial: run the pack's unfinished configurations, keep each one's rows in the
    sweep folder the moment it finishes, report the pack's means to Tune."""
    import ray
    import torch
    from ray import tune

    torch.set_num_threads(ctx.threads)
    folder = SweepFolder(ctx.storage, ctx.name)
    node = ray.get_runtime_context().get_node_id()
    finals: list[dict[str, Any]] = []
    for cfg in ctx.members(params):
        trial_id = cfg.config_hash()
        rows = folder.rows(trial_id)
        if rows is None:
            try:
                rows = run_trial(cfg, Workdirs(pretrained=folder.pretrained), sweep=ctx.name, trial_id=trial_id,
                                 progress=False)
            except PrunerlibError as exc:  # unusable data on this node: a result too, and the sweep goes on
                rows = failed_rows(identity_columns(cfg, ctx.name, trial_id), exc)
            rows = [row | {"node_id": node} for row in rows]
            folder.write_rows(trial_id, rows)
        finals.append(rows[-1])
    ok = [row for row in finals if row["status"] == "ok"]
    tune.report({
        **{metric: _mean(row.get(metric) for row in ok) for metric in ctx.metrics},
        "configs_ok": len(ok), "configs_failed": len(finals) - len(ok),
    })


def _mean(values: Any) -> float:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


# --------------------------------------------------------------------------------------------
def run_sweep(spec: SweepSpec, storage: str, address: str | None = None, resume: bool = False) -> int:
    """Run (or resume) the sweep; print where the results are and a summary. Exit code:
    0 when every configuration has rows (failed trials included), 1 when some have none."""
    import ray
    from ray import tune

    folder = SweepFolder(storage, spec.name)
    if address is None and spec.gpu > 0:
        import torch

        if not torch.cuda.is_available():
            raise SpecError(f"resources.gpu: {spec.gpu:g} GPU per trial asked for, but this machine has no GPU "
                            f"(set resources.gpu: 0, or join a GPU cluster with --address)")
    folder.begin(spec, resume)
    started_here = not ray.is_initialized()
    if started_here:
        _connect(address)
    try:
        _check_cluster(spec, folder, remote=address is not None)
        tuner = _tuner(spec, folder, resume)
        grid = tuner.fit()
        frame = folder.consolidate()
        print(summarise(frame, spec))
        print(f"results: {folder.results}")
        missing = [r for r in grid if r.error is not None]
        if missing:
            print(f"{len(missing)} Tune trial(s) ended in an error without rows (see {folder.tune}); "
                  f"rerun with --resume to retry them")
        return 1 if missing else 0
    finally:
        if started_here:
            ray.shutdown()


def _connect(address: str | None) -> None:
    import ray

    if address is None:  # "local" starts a fresh embedded Ray even when a cluster runs on this machine
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")
        return
    try:
        ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; a cluster started by `ray start` uses token authentication: set RAY_AUTH_MODE=token "
                "(the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise ConfigError(f"--address: cannot join the Ray cluster at {address}: "
                          f"{str(exc).splitlines()[0][:200]}{hint}") from None


def _tuner(spec: SweepSpec, folder: SweepFolder, resume: bool):  # noqa: ANN202  (ray.tune.Tuner)
    from ray import tune

    packs = grid_packs(spec) if spec.grid else []
    metrics = tuple(dict.fromkeys([*(m for m, _ in spec.search.objectives), *REPORTED])) if spec.search else REPORTED
    ctx = SweepContext(
        name=spec.name, storage=str(folder.root.parent), fixed=spec.fixed, seeds=spec.seeds,
        packs={p.label: tuple(cfg.to_dict() for cfg in p.members) for p in packs}, metrics=metrics,
        threads=max(1, int(spec.cpu)),
    )
    trainable = tune.with_resources(tune.with_parameters(pack_trial, ctx=ctx), {"cpu": spec.cpu, "gpu": spec.gpu})
    if resume and tune.Tuner.can_restore(folder.tune):
        return tune.Tuner.restore(str(folder.tune), trainable, resume_unfinished=True, resume_errored=True)
    run_config = tune.RunConfig(
        name=folder.tune.name, storage_path=str(folder.root),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    if spec.search:
        search, samples, space = _optuna(spec, folder), spec.search.num_samples, {}
    else:
        search, samples, space = None, 1, {"pack": tune.grid_search([p.label for p in packs])}
    tune_config = tune.TuneConfig(search_alg=search, num_samples=samples, max_concurrent_trials=spec.max_concurrent,
                                  reuse_actors=True)
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def _optuna(spec: SweepSpec, folder: SweepFolder):  # noqa: ANN202  (ray.tune.search.optuna.OptunaSearch)
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.search.optuna import OptunaSearch

    search = spec.search
    assert search is not None
    space: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, dim in search.space.items():
        if isinstance(dim, Range) and dim.integer:
            space[key] = optuna.distributions.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        elif isinstance(dim, Range):
            space[key] = optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
        else:
            space[key] = optuna.distributions.CategoricalDistribution(list(dim))
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=search.seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=search.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=search.seed),
        "grid": lambda: optuna.samplers.GridSampler({k: list(v) for k, v in search.space.items()}, seed=search.seed),
    }
    metric = [m for m, _ in search.objectives]
    mode = [d for _, d in search.objectives]
    return OptunaSearch(
        space=space, metric=metric if len(metric) > 1 else metric[0], mode=mode if len(mode) > 1 else mode[0],
        sampler=samplers[search.sampler](), study_name=spec.name,
        storage=JournalStorage(JournalFileBackend(str(folder.journal))),
    )


def _check_cluster(spec: SweepSpec, folder: SweepFolder, remote: bool) -> None:
    """Refuse, before any trial starts, a sweep the cluster can never schedule or whose
    storage some node cannot see."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    best_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    best_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    if spec.gpu > 0 and best_gpu == 0:
        raise SpecError(f"resources.gpu: {spec.gpu:g} GPU per trial asked for, but the Ray cluster has no GPU "
                        f"(start its GPU workers first, or set resources.gpu: 0)")
    if spec.gpu > best_gpu:
        raise SpecError(f"resources.gpu: {spec.gpu:g} GPUs per trial, but no node has more than {best_gpu:g}")
    if spec.cpu > best_cpu:
        raise SpecError(f"resources.cpu: {spec.cpu:g} CPUs per trial, but no node has more than {best_cpu:g}")
    if remote:
        _check_shared_storage(folder, nodes)


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
