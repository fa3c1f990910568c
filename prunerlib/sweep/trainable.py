"""What runs inside a Tune trial, on a Ray worker: a pack of trial configurations as one
population, its rows kept in the sweep folder, its progress and means reported to Tune.

Tune pickles `pack_trial` by reference (module and name), so a worker imports this module and
looks the function up here: a worker hook that wraps it (tests/fake_cuda.py) patches
`prunerlib.sweep.trainable.pack_trial`. Nothing here runs on the driver but `SweepContext`'s
construction.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from prunerlib.config import TrialConfig
from prunerlib.errors import PrunerlibError
from prunerlib.devices import resolve_device
from prunerlib.pipeline import Workdirs, failed_rows, identity_columns
from prunerlib.pipeline import run_pack
from prunerlib.sweep.search import NUMBERS, POINTS, VALUES
from prunerlib.sweep.checks import seeded
from prunerlib.sweep.store import SweepFolder

# What every Tune trial reports (means over its pack's finished configurations), besides the
# search objectives: enough for Tune's console table to show how the sweep is going.
REPORTED = ("acc_finetuned", "units_removed_frac", "weights_removed_frac", "filters_removed_frac")
# The reported key naming the configurations whose rows were written since the pack's last
# report ("id,id"): the driver's loggers read their rows from the sweep folder. A string,
# which Tune's own loggers skip.
NEW_IDS = "new_trial_ids"
# A report waits for the driver to take it: a pack of a hundred members finishing together
# spent over a second telling Tune one by one (benchmarks/README.md). A member's finish is told
# once this long has passed since the last report; the ids of those not told yet ride on the
# next one (a cycle's end, a later finish, or the pack's last report).
REPORT_EVERY_S = 1.0


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
    # spec.plugins: a user's pruner files, imported on each worker before it builds a config
    # (the driver imported them when it read the spec).
    plugins: tuple[str, ...] = ()
    save_models: str = "final"  # spec.save_models
    latency_batch: int | None = 256  # spec.latency_batch (None: not measured)

    def members(self, params: dict[str, Any]) -> list[TrialConfig]:
        if "pack" in params:
            return [TrialConfig.from_dict(settings) for settings in self.packs[params["pack"]]]
        return [TrialConfig.from_dict({**seeded(self.fixed, s), **point}) for point in params[POINTS]
                for s in self.seeds]


def pack_trial(params: dict[str, Any], ctx: SweepContext) -> None:
    """One Tune trial: run the pack's unfinished configurations as a population, keep each
    one's rows in the sweep folder, and report to Tune as each configuration finishes (how many
    are done, the means so far) and once more at the end, when the report also carries each
    search point's objective values (`VALUES`, what BatchedOptunaSearch tells the study).

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

    from prunerlib import plugins

    plugins.load(ctx.plugins)  # once per worker process; SweepContext holds plain settings only
    torch.set_num_threads(ctx.threads)
    folder = SweepFolder(ctx.storage, ctx.name)
    node = ray.get_runtime_context().get_node_id()
    members = ctx.members(params)
    ids = [cfg.config_hash() for cfg in members]
    rows = {tid: None if tid in ctx.rerun else folder.rows(tid) for tid in ids}
    todo = [(cfg, tid) for cfg, tid in zip(members, ids) if rows[tid] is None]
    # A search point's rows name the Optuna trial that asked it (members are points × seeds).
    asked = {tid: {"optuna_trial": params[NUMBERS][i // len(ctx.seeds)]} for i, tid in enumerate(ids)} \
        if NUMBERS in params else {}
    progress = _Progress(params, ctx, ids, rows)

    def keep(index: int, member_rows: list[dict[str, Any]]) -> None:
        tid = todo[index][1]
        rows[tid] = [row | {"node_id": node} | asked.get(tid, {}) for row in member_rows]
        folder.write_rows(tid, rows[tid])
        # Called in this trial's own thread (run_pack calls back synchronously), where
        # tune.report may be called.
        progress.report(final=False, when_due=True)

    def cycle_done(cycle: int) -> None:
        progress.cycle = cycle
        progress.report(final=False)

    if todo:
        dirs = Workdirs(pretrained=folder.pretrained, models=folder.models, save_models=ctx.save_models,
                        results=folder.root, latency_batch=ctx.latency_batch)
        cfgs, tids = [cfg for cfg, _ in todo], [tid for _, tid in todo]
        # One device setting per pack: grid packs are populations (device is shared), and a
        # search's device is fixed (spec.py).
        device = resolve_device(cfgs[0].device, ray.get_gpu_ids())
        try:
            run_pack(cfgs, dirs, sweep=ctx.name, trial_ids=tids, gpu_share=ctx.gpu_share, on_member_done=keep,
                     device=device, on_cycle_done=cycle_done)
        except PrunerlibError as exc:  # unusable data on this node: a result too, and the sweep goes on
            for index, (cfg, tid) in enumerate(todo):
                if rows[tid] is None:
                    keep(index, failed_rows(identity_columns(cfg, ctx.name, tid), exc))
    progress.report(final=True)


class _Progress:
    """What a pack reports to Tune: configurations done of its total, the last fine-tuning cycle
    finished (`cycle`, 0 before the first), the means of its finished configurations' final rows,
    and which configurations are new since the last report."""

    def __init__(self, params: dict[str, Any], ctx: SweepContext, ids: list[str],
                 rows: dict[str, list[dict[str, Any]] | None]):
        self.params, self.ctx, self.ids, self.rows = params, ctx, ids, rows
        self.told = {tid for tid, kept in rows.items() if kept is not None}  # logged by an earlier run
        self.cycle = 0
        self.last = -REPORT_EVERY_S

    def report(self, final: bool, when_due: bool = False) -> None:
        from ray import tune

        if when_due and time.monotonic() - self.last < REPORT_EVERY_S:
            return
        ctx, rows = self.ctx, self.rows
        finals = [rows[tid][-1] for tid in self.ids if rows[tid] is not None]
        ok = [row for row in finals if row["status"] == "ok"]
        new = [tid for tid in dict.fromkeys(self.ids) if rows[tid] is not None and tid not in self.told]
        self.told.update(new)
        report = {metric: mean_present(row.get(metric) for row in ok) for metric in (*ctx.objectives, *REPORTED)}
        if final and POINTS in self.params:  # each point's objectives: the mean over its seeds
            per_point = [finals[i: i + len(ctx.seeds)] for i in range(0, len(finals), len(ctx.seeds))]
            report[VALUES] = [[mean_present(r.get(m) for r in point if r["status"] == "ok") for m in ctx.objectives]
                              for point in per_point]
        tune.report({**report, "cycle": self.cycle, "configs_done": len(finals), "configs_total": len(self.ids), "configs_ok": len(ok),
                     "configs_failed": len(finals) - len(ok), NEW_IDS: ",".join(new)})
        self.last = time.monotonic()


def mean_present(values: Any) -> float:
    """The mean of the values a pack's rows have (a failed row has no accuracy); NaN if none."""
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


# cuBLAS reads this once, when CUDA starts in a worker: `exact: true` trials need it there
# before their first CUDA call (training.set_numerics refuses an exact trial without it).
WORKER_ENV = {"env_vars": {"CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")}}
