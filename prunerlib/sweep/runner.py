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
from prunerlib.pipeline import Workdirs, failed_rows, identity_columns
from prunerlib.population import run_pack
from prunerlib.sweep.plan import grid_packs, search_batch, slots
from prunerlib.sweep.search import POINTS, VALUES, BatchedOptunaSearch
from prunerlib.sweep.spec import SpecError, SweepSpec
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

    def members(self, params: dict[str, Any]) -> list[TrialConfig]:
        if "pack" in params:
            return [TrialConfig.from_dict(settings) for settings in self.packs[params["pack"]]]
        return [TrialConfig.from_dict({**self.fixed, **point, "seed": s}) for point in params[POINTS]
                for s in self.seeds]


def pack_trial(params: dict[str, Any], ctx: SweepContext) -> None:
    """One Tune trial: run the pack's unfinished configurations as a population, keep each
    one's rows in the sweep folder, report the pack's means (and each search point's
    objective values) to Tune."""
    import ray
    import torch
    from ray import tune

    torch.set_num_threads(ctx.threads)
    folder = SweepFolder(ctx.storage, ctx.name)
    node = ray.get_runtime_context().get_node_id()
    members = ctx.members(params)
    ids = [cfg.config_hash() for cfg in members]
    rows = {tid: folder.rows(tid) for tid in ids}
    todo = [(cfg, tid) for cfg, tid in zip(members, ids) if rows[tid] is None]
    if todo:
        dirs = Workdirs(pretrained=folder.pretrained)
        try:
            results = run_pack([cfg for cfg, _ in todo], dirs, sweep=ctx.name, trial_ids=[tid for _, tid in todo],
                               gpu_share=ctx.gpu_share)
        except PrunerlibError as exc:  # unusable data on this node: a result too, and the sweep goes on
            results = [failed_rows(identity_columns(cfg, ctx.name, tid), exc) for cfg, tid in todo]
        for (_, tid), member_rows in zip(todo, results):
            rows[tid] = [row | {"node_id": node} for row in member_rows]
            folder.write_rows(tid, rows[tid])
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
def run_sweep(spec: SweepSpec, storage: str, address: str | None = None, resume: bool = False) -> int:
    """Run (or resume) the sweep; print where the results are and a summary. Exit code:
    0 when every configuration has rows (failed trials included), 1 when some have none."""
    import ray

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
    import ray
    from ray import tune

    resources = ray.cluster_resources()
    parallel = slots(spec, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
    # A resumed sweep keeps the packs it started with, whatever the cluster now offers:
    # Tune restores trials by pack label.
    packs = folder.packs() if resume else None
    if packs is None:
        packs = {p.label: tuple(cfg.to_dict() for cfg in p.members) for p in grid_packs(spec, parallel)} \
            if spec.grid else {}
        folder.save_packs(packs)
    ctx = SweepContext(
        name=spec.name, storage=str(folder.root.parent), fixed=spec.fixed, seeds=spec.seeds,
        packs=packs,
        objectives=tuple(m for m, _ in spec.search.objectives) if spec.search else (),
        threads=max(1, int(spec.cpu)), gpu_share=min(1.0, spec.gpu) if spec.gpu else 1.0,
    )
    trainable = tune.with_resources(tune.with_parameters(pack_trial, ctx=ctx), {"cpu": spec.cpu, "gpu": spec.gpu})
    if resume and tune.Tuner.can_restore(folder.tune):
        return tune.Tuner.restore(str(folder.tune), trainable, resume_unfinished=True, resume_errored=True)
    run_config = tune.RunConfig(
        name=folder.tune.name, storage_path=str(folder.root),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    if spec.search:
        searcher = BatchedOptunaSearch(spec.search, spec.name, str(folder.journal), search_batch(spec, parallel))
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=parallel,
                                      reuse_actors=True)
        return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    tune_config = tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True)
    return tune.Tuner(trainable, param_space={"pack": tune.grid_search(list(packs))},
                      tune_config=tune_config, run_config=run_config)


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
