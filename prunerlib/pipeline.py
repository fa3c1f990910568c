"""Trials, end to end (SPEC §5): pretrain (or reuse) → prune → fine-tune, per cycle.

`run_trial` is the experiment contract: a `TrialConfig` in, result rows (SPEC §6) out.
`run_pack` runs many configurations, fine-tuning the compatible ones together as one
population (`population`); a single trial is a pack of one, so a pack member gets exactly
its single run's rows by construction. No Ray in here: the sweep service calls `run_pack`
inside Tune trials.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import logging
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.datasets import Data, load_data
from prunerlib.devices import resolve_device
from prunerlib.errors import ConfigError, DataError, PrunerlibError, is_environment_fault
from prunerlib.latency import latency_columns
from prunerlib.masks import Masks
from prunerlib.metrics import count_flops, param_counts, pruned_flops, removed_fractions, weight_scope
from prunerlib.models import build_model
from prunerlib.batched import Kernel
from prunerlib.population import FineTuning, members_that_fit, population_key
from prunerlib.pretrained import PretrainResult, for_members
from prunerlib.pruners import MethodStep, PruneContext, build_pruners
from prunerlib.records import device_provenance, provenance
from prunerlib.saved import SaveModels, save_compacted
from prunerlib.surgery import Removal, apply_removal, compact
from prunerlib.training import accuracy, diverged, set_numerics

log = logging.getLogger("prunerlib.pipeline")


@dataclass
class Workdirs:
    """Where a trial keeps its artefacts, and what it measures beside its result; none of it
    changes a result (nor `config_hash`). As a library, a trial keeps and measures nothing it is
    not asked to; `prunerlib run` and sweeps save final models and measure latency by default."""

    pretrained: Path
    image_cache: Path | None = None
    models: Path | None = None  # compacted models are saved here (`saved`); None: none are
    save_models: SaveModels = "final"  # all_cycles: every cycle's model too, as <trial_id>.cycle<k>.pt
    results: Path | None = None  # the folder of the Parquet file the rows go to: `model_path` is relative to it
    latency_batch: int | None = None  # measure latency at this batch size and at 1 (`latency`); None: not


# What a saved model's file repeats of its row: enough to check a reload against the trial.
_ABOUT = ("trial_id", "config_hash", "cycle", "acc_finetuned", "val_acc_finetuned", "n_test", "n_val",
          "data_fingerprint")


Rows = list[dict[str, Any]]
MemberDone = Callable[[int, Rows], None]


def run_trial(cfg: TrialConfig, dirs: Workdirs, *, sweep: str | None = None, trial_id: str | None = None,
              progress: bool = True, device: torch.device | str | None = None) -> Rows:
    """Rows for every cycle run, or the one row of a trial that could not finish: `failed` when
    its training diverged, `error` (with the traceback) for a fault in the code. Bad settings
    and unusable data raise (ConfigError / DataError): there is no result to keep. So do faults
    of the machine (`errors.is_environment_fault`): they are retried, never recorded.

    `device`, when given, is where to run instead of `resolve_device(cfg.device)`: a sweep
    resolves the setting against the GPUs its scheduler assigned, and the configuration (whose
    hash is the trial's identity) stays as written. The rows' `device` column is what ran."""
    return run_pack([cfg], dirs, sweep=sweep, trial_ids=[trial_id], progress=progress, device=device)[0]


def run_pack(cfgs: Sequence[TrialConfig], dirs: Workdirs, *, sweep: str | None = None,
             trial_ids: Sequence[str | None] | None = None, progress: bool = False,
             gpu_share: float = 1.0, on_member_done: MemberDone | None = None,
             device: torch.device | str | None = None, kernel: Kernel = "auto",
             on_cycle_done: Callable[[int], None] | None = None) -> list[Rows]:
    """Rows for each configuration, in order: for each what run_trial(cfg, dirs, sweep=...,
    trial_id=...) returns (same columns, same failed- and error-row behaviour). Members sharing
    a `population_key` are fine-tuned together, in populations of at most `members_that_fit`,
    whose batched arithmetic differs from a single run's by float rounding; a member alone in
    its population fine-tunes as a single trial does, to the bit. Bad settings or unusable data
    raise before any training; a diverging or crashing member gets its row and the others go
    on. A fault of the machine (`errors.is_environment_fault`) raises out of run_pack:
    `on_member_done(index, rows)` is called the moment each member's rows are final, so what
    finished before it is kept; `on_cycle_done(cycle)` as each population finishes fine-tuning a cycle.

    `wall_finetune_s` of a member is its share of the stage: the stage's wall time (its random
    control's shadow included) divided by the members that started it, so summing over rows
    still gives time spent. `device`, when given, replaces each member's resolved `device`
    setting, as in run_trial; a CUDA pack caps its process at `gpu_share` of the GPU. `kernel`
    chooses the FFN populations' step (`batched.train_population`): auto, c or torch."""
    ids: Sequence[str | None] = trial_ids if trial_ids is not None else [None] * len(cfgs)
    if len(ids) != len(cfgs):
        raise ValueError(f"{len(cfgs)} configurations but {len(ids)} trial ids")
    groups: dict[tuple[Any, ...], list[int]] = {}
    for pos, cfg in enumerate(cfgs):
        groups.setdefault(population_key(cfg), []).append(pos)
    results: list[Rows] = [[] for _ in cfgs]

    def done(pos: int, rows: Rows) -> None:
        results[pos] = rows
        if on_member_done is not None:
            on_member_done(pos, rows)

    for group in groups.values():
        where = torch.device(device) if device is not None else resolve_device(cfgs[group[0]].device)
        set_numerics(where, cfgs[group[0]].exact)  # before the first CUDA call: see set_numerics
        if where.type == "cuda":  # a 0.25-GPU trial must not take the card from the other three
            torch.cuda.set_per_process_memory_fraction(min(1.0, float(gpu_share)), where)
        size = members_that_fit(cfgs[group[0]], where, gpu_share=gpu_share) if len(group) > 1 else 1
        for members in (group[at:at + size] for at in range(0, len(group), size)):
            _run_population([cfgs[p] for p in members], dirs, sweep, [ids[p] for p in members], progress,
                            lambda i, rows, members=members: done(members[i], rows), where, kernel, on_cycle_done)
    return results


def _run_population(cfgs: list[TrialConfig], dirs: Workdirs, sweep: str | None, ids: list[str | None],
                    progress: bool, done: MemberDone, device: torch.device, kernel: Kernel = "auto",
                    cycle_done: Callable[[int], None] | None = None) -> None:
    """The lifecycle of one population's members, cycle by cycle; `done(i, rows)` hands each
    member's rows over the moment they are final."""
    bases = [identity_columns(cfg, sweep, tid) | device_provenance(device) for cfg, tid in zip(cfgs, ids)]
    states: dict[int, TrialState] = {}

    def fail(i: int, exc: Exception) -> None:
        rows = failed_rows(bases[i], exc)  # raises a fault of the machine: retried, never recorded
        states.pop(i, None)
        done(i, rows)

    def finish(i: int) -> None:
        state = states.pop(i)
        rows = [bases[i] | row for row in state.finish()]
        final = next(row for row in rows if row["final"])
        final |= _kept(state, dirs, final, cycle=None)
        done(i, rows)

    every_cycle = dirs.models is not None and dirs.save_models == "all_cycles"

    try:
        data = load_data(cfgs[0], dirs.image_cache).to(device)
        _check_settings(cfgs, data)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # noqa: BLE001  a fault in the code: every member's error row
        for i in range(len(cfgs)):
            fail(i, exc)
        return

    try:
        pretrained = for_members(cfgs, data, dirs.pretrained, device, progress)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # noqa: BLE001  every member's row (a fault of the machine is raised by fail)
        pretrained = [exc] * len(cfgs)
    for i, (cfg, found) in enumerate(zip(cfgs, pretrained)):
        try:
            if isinstance(found, Exception):
                raise found
            states[i] = TrialState(cfg, data, *found)
            if every_cycle:
                states[i].on_record = lambda state, row, i=i: row.update(
                    _kept(state, dirs, bases[i] | row, row["cycle"]))
        except (ConfigError, DataError):
            raise
        except Exception as exc:  # noqa: BLE001  a failed member is a row
            fail(i, exc)

    tuner = FineTuning(len(cfgs), kernel)
    for cycle in range(1, max(cfg.cycles for cfg in cfgs) + 1):
        tuning: list[int] = []
        for i in list(states):
            try:
                if states[i].prune(cycle):
                    tuning.append(i)
                else:
                    finish(i)
            except Exception as exc:  # noqa: BLE001
                fail(i, exc)
        if not tuning:
            break
        # A random control's shadow (its method's own trajectory) trains beside it as one more
        # member; it fails with its control.
        tuned = [(i, state) for i in tuning for state in states[i].tuned()]
        try:
            stage = tuner.run([state for _, state in tuned], data, cycle, progress)
        except Exception as exc:  # noqa: BLE001  the stage's members fail with it
            for i in tuning:
                fail(i, exc)
            continue
        if cycle_done is not None:
            cycle_done(cycle)
        share = stage.wall_s / len(tuning)
        failures = {tuned[pos][0]: failure for pos, failure in stage.failures.items()}
        for i in tuning:
            cfg = cfgs[i]
            try:
                if i in failures:
                    epoch, loss = failures[i]
                    raise diverged(loss, epoch, f"fine-tune {cycle}/{cfg.cycles}")
                if not states[i].record(cycle, share) or cycle == cfg.cycles:
                    finish(i)
            except Exception as exc:  # noqa: BLE001
                fail(i, exc)


def _kept(state: TrialState, dirs: Workdirs, row: dict[str, Any], cycle: int | None) -> dict[str, Any]:
    """What a member keeps besides `row`: its model file (`cycle` None: the final one) and, for
    the final row, its measured latency; the columns saying so."""
    kept: dict[str, Any] = {}
    compacted = functools.cache(lambda: compact(state.model, state.masks))  # once for the file and the timing
    if dirs.models is not None and dirs.save_models != "none":
        cycle_file = lambda k: dirs.models / f"{row['trial_id']}.cycle{k}.pt"  # noqa: E731
        path = dirs.models / f"{row['trial_id']}.pt" if cycle is None else cycle_file(cycle)
        if cycle is None and dirs.save_models == "all_cycles":  # the final row's cycle is saved already
            os.replace(cycle_file(row["cycle"]), path)
        else:
            save_compacted(path, compacted(), state.cfg, input_shape=state.input_shape,
                           class_names=state.data.class_names, preprocessing=state.data.preprocessing,
                           about={key: row.get(key) for key in _ABOUT})
        kept["model_path"] = os.path.relpath(path, dirs.results) if dirs.results is not None else str(path)
    if cycle is None and dirs.latency_batch is not None:
        # One member at a time, outside any batched computation: each network as it would run alone.
        kept |= latency_columns(state.model, compacted(), state.input_shape, dirs.latency_batch,
                                state.data.train_x.device)
    return kept


def _check_settings(cfgs: Sequence[TrialConfig], data: Data) -> None:
    """Raise now, before any pretraining, for a setting that only a built model can check."""
    with torch.random.fork_rng(devices=[]):  # build_model seeds the global generator
        template = build_model(cfgs[0], data.in_features, data.classes)
    for cfg in cfgs:
        weight_scope(template, cfg.threshold_layers)


def identity_columns(cfg: TrialConfig, sweep: str | None, trial_id: str | None) -> dict[str, Any]:
    """Columns every row of the trial shares: identity, configuration, provenance."""
    started = dt.datetime.now(dt.timezone.utc)
    return cfg.columns() | provenance() | {
        "sweep": sweep,
        "trial_id": trial_id or f"{cfg.config_hash()}-{started:%Y%m%dT%H%M%S%f}",
        "config_hash": cfg.config_hash(),
        "pretrain_key": cfg.pretrain_key(),
        "started_at": started,
        "config_json": json.dumps(cfg.to_dict(), sort_keys=True),
    }


def failed_rows(base: dict[str, Any], exc: BaseException) -> Rows:
    """The one row a trial that could not finish leaves; earlier cycles' rows are not kept.
    A divergence (or another error the configuration causes) is `failed`; anything else is a
    fault in the code, `error`, with its traceback so it cannot pass for a result. A fault of
    the machine (`errors.is_environment_fault`) is no row at all: it is raised again, for the
    sweep to retry."""
    if is_environment_fault(exc):
        raise exc
    if isinstance(exc, PrunerlibError):
        log.warning("trial %s failed: %s", base["trial_id"], exc)
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    else:
        log.error("trial %s raised %s: %s", base["trial_id"], type(exc).__name__, exc)
        status, error = "error", "".join(traceback.format_exception(exc)).strip()
    return [base | {"cycle": 1, "final": True, "status": status, "error": error}]


class TrialState:
    """One trial between its stages: model, masks, pruners and the rows so far. Fine-tuning is
    not here: a population (`population.FineTuning`) trains its members' models in place.

    A random control mirroring distinctiveness or threshold over several cycles carries the
    method's own trial as its `shadow` (SPEC §4.4): from cycle 2 on, what the method removes
    depends on the method's trajectory, not the control's, so the method is pruned and
    fine-tuned beside the control and tells it how many to remove at each cycle."""

    def __init__(self, cfg: TrialConfig, data: Data, model: nn.Module, pre: PretrainResult,
                 shadow: bool = False):
        self.cfg, self.data, self.model, self.pre = cfg, data, model, pre
        # A shadow's steps and its max_acc_drop decision are all its control reads: it keeps no
        # rows and spends no evaluation on them.
        self.is_shadow = shadow
        device = data.train_x.device
        self.input_shape = tuple(data.train_x.shape[1:])
        self.flops_dense = sum(count_flops(model, self.input_shape).values())
        self.params_total, _ = param_counts(model)
        self.masks = Masks(model).to(device)
        self.pruners = build_pruners(cfg)
        self.scope = weight_scope(model, cfg.threshold_layers)
        sample = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(cfg.seed))
        # The pruning inputs as indices into the shared training data, gathered only while the
        # pruners decide: a copy per member (22 MB for the CNN) would cap a population's size.
        self.sample = sample[: cfg.distinct_max_patterns].to(device)
        self.ctx = PruneContext(model, self.masks, None, torch.Generator().manual_seed(cfg.seed))
        self.acc_pruned = self.val_acc_pruned = float("nan")
        self.rows: list[dict[str, Any]] = []
        self.step: MethodStep | None = None  # this cycle's
        self.stopped = False  # a cycle broke max_acc_drop: the trial ended at the cycle before
        self._accepted: tuple[dict[str, torch.Tensor], Masks] | None = None
        # Called with each new row before max_acc_drop may put the previous cycle's model back:
        # what keeps every cycle's model (save_models: all_cycles).
        self.on_record: Callable[[TrialState, dict[str, Any]], None] | None = None
        self.shadow = TrialState(cfg.replace(pruner=cfg.match, match=None), data, copy.deepcopy(model), pre,
                                 shadow=True) if cfg.shadows_its_method else None

    def tuned(self) -> list[TrialState]:
        """The models to fine-tune this cycle: the trial's, then its shadow's while it runs."""
        return [self] if self.shadow is None or self.shadow.stopped else [self, self.shadow]

    def prune(self, cycle: int) -> bool:
        """Prune for `cycle`; False when nothing more can be pruned (the trial stops)."""
        if self.shadow is not None:
            if self.shadow.stopped or not self.shadow.prune(cycle):
                log.info("cycle %d: the %s trial this control mirrors has stopped, stopping", cycle, self.cfg.match)
                return False
            self.ctx.reference = self.shadow.step
        removal = Removal()
        self.ctx.inputs, self.ctx.validation = self.data.train_x[self.sample], (self.data.val_x, self.data.val_y)
        try:
            for pruner in self.pruners:
                removal.extend(pruner.decide(self.ctx))
        finally:
            self.ctx.inputs = self.ctx.validation = None
        if cycle > 1 and self.cfg.pruner != "none" and removal.count() == 0:
            log.info("cycle %d: nothing more to prune, stopping", cycle)
            return False
        if self.is_shadow:
            self.step = MethodStep(removal, self.masks.clone())  # what the control copies
        apply_removal(self.model, self.masks, removal)
        if not self.is_shadow:
            self.acc_pruned = accuracy(self.model, self.data.test_x, self.data.test_y)
            self.val_acc_pruned = accuracy(self.model, self.data.val_x, self.data.val_y)
        return True

    def record(self, cycle: int, wall_finetune_s: float) -> bool:
        """Add the fine-tuned cycle's row; False when the trial stops here because validation
        accuracy fell more than `max_acc_drop` below the pretrained model's (SPEC §5.4): the
        last acceptable cycle's model and row are then the final ones. The first cycle is
        always kept: max_acc_drop decides whether to prune *again*."""
        cfg, data, model, masks = self.cfg, self.data, self.model, self.masks
        if self.shadow is not None and not self.shadow.stopped:
            self.shadow.record(cycle, wall_finetune_s)
        if self.is_shadow:
            return cfg.max_acc_drop is None or self._keep(cycle, accuracy(model, data.val_x, data.val_y))
        params_nonzero = param_counts(model)[1]
        flops = pruned_flops(model, masks, self.input_shape)
        val_acc = accuracy(model, data.val_x, data.val_y)
        self.rows.append(_pretrain_columns(self.pre) | removed_fractions(model, masks, self.scope) | {
            "cycle": cycle, "final": False, "status": "ok",
            "acc_pruned": self.acc_pruned, "val_acc_pruned": self.val_acc_pruned,
            "acc_finetuned": accuracy(model, data.test_x, data.test_y),
            "train_acc_finetuned": accuracy(model, data.train_x, data.train_y),
            "val_acc_finetuned": val_acc,
            "n_val": len(data.val_y), "n_test": len(data.test_y),
            "params_total": self.params_total, "params_nonzero": params_nonzero,
            "compression_ratio": self.params_total / params_nonzero if params_nonzero else float("inf"),
            "flops_dense": self.flops_dense, "flops_pruned": flops,
            "theoretical_speedup": self.flops_dense / flops if flops else float("inf"),
            "wall_finetune_s": wall_finetune_s,
        })
        if self.on_record is not None:
            self.on_record(self, self.rows[-1])
        return cfg.max_acc_drop is None or self._keep(cycle, val_acc)

    def _keep(self, cycle: int, val_acc: float) -> bool:
        """The max_acc_drop decision after `cycle`: False, with the last acceptable cycle's model
        and masks put back, when validation accuracy fell too far."""
        cfg, model, masks = self.cfg, self.model, self.masks
        # Decided on validation accuracy: the test set is only ever reported, never consulted.
        if cycle > 1 and val_acc < self.pre.acc_val - cfg.max_acc_drop:
            log.info("cycle %d: validation accuracy %.4f fell more than %.4f below pretrained %.4f; "
                     "keeping cycle %d", cycle, val_acc, cfg.max_acc_drop, self.pre.acc_val, cycle - 1)
            state, kept = self._accepted
            model.load_state_dict(state)
            self.masks.tensors = kept.tensors
            self.stopped = True
            return False
        if cycle < cfg.cycles:  # the model to fall back on if the next cycle goes too far
            self._accepted = ({k: v.clone() for k, v in model.state_dict().items()}, masks.clone())
        return True

    def finish(self) -> list[dict[str, Any]]:
        self.rows[-2 if self.stopped else -1]["final"] = True
        return self.rows


def _pretrain_columns(pre: PretrainResult) -> dict[str, Any]:
    return {
        "acc_pretrain": pre.acc_test, "train_acc_pretrain": pre.acc_train, "val_acc_pretrain": pre.acc_val,
        "pretrain_epochs_run": pre.epochs_run, "pretrain_reused": pre.reused, "wall_pretrain_s": pre.wall_s,
        "data_fingerprint": pre.data_fingerprint,
    }
