"""A sensitivity scan (`prunerlib.sensitivity`) as a sweep: `kind: sensitivity` in a spec.

    name: sensitivity_waveform
    kind: sensitivity
    fixed: {dataset: waveform}            # data, model and pretraining settings, as `prunerlib run` takes
    seeds: [0, 1, 2, 3, 4]
    sensitivity:
      fractions: [0.1, 0.5, 0.9]          # default 0.1 ... 0.9
      criteria: [l1, mean_activation, apoz, magnitude, random]   # default: all
      layers: [fc1]                       # default: every prunable layer
      vary: {attributes: [21, 40]}        # a scan per value (a list is an axis, several multiply)
    resources: {cpu: 1, gpu: 0}
    max_concurrent: 8
    max_failures: 1

A Tune trial is one *unit*: one structure (a conv layer's filters, the hidden layer's units, or
its incoming weights) of one seed's pretrained model, by every criterion at every fraction.
Agreement compares the criteria of one structure, so they stay together; structures and seeds
are apart, so a cluster runs them side by side and a killed driver loses at most the units
running. Units are ordered structure by structure, seed by seed: the units running at once
need different pretrained models, and the later ones find theirs in `<sweep>/pretrained`.

The sweep folder holds `scans/<unit>.sensitivity.parquet` and `<unit>.agreement.parquet`
(agreement written first, so a unit whose sensitivity file is readable is whole), or
`scans/<unit>.failed.json` when its configuration cannot be scanned; consolidated into
`sensitivity.parquet` and `agreement.parquet` at the top of the folder, where `prunerlib report`
finds them. Resuming runs the units that have neither.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prunerlib.config import TrialConfig
from prunerlib.errors import PrunerlibError, is_environment_fault
from prunerlib.files import atomic_write
from prunerlib.sensitivity import (AGREEMENT_FILE, CRITERIA, FRACTIONS, SCAN_FILE, ignored, scan_key,
                                   structures, targets)
from prunerlib.sweep.checks import SpecError, config_at, kind, mapping, number, seeded, setting_name
from prunerlib.sweep.store import SweepFolder

if TYPE_CHECKING:
    from prunerlib.sweep.spec import SweepSpec

# What a scan spec may say besides `kind`; anything else (grid, search, pack_size, ...) is refused.
SCAN_KEYS = ("name", "description", "kind", "fixed", "seeds", "sensitivity", "resources", "max_concurrent",
             "max_failures")
# A unit's rows: the structure of one seed of one scan.
UNIT_COLUMNS = ["scan", "seed", "layer", "what"]


@dataclass(frozen=True)
class Unit:
    id: str  # file names in scans/: the configuration's hash and the structure
    label: str  # what Tune's console shows and its trials' parameter; unique within the sweep
    settings: dict[str, Any]  # the TrialConfig, seed included
    layer: str
    what: str


@dataclass(frozen=True)
class ScanPlan:
    fractions: tuple[float, ...]
    criteria: tuple[str, ...]
    units: tuple[Unit, ...]


# --- the spec --------------------------------------------------------------------------------
def parse_scan(raw: Any, fixed: dict[str, Any], seeds: tuple[int, ...]) -> ScanPlan:
    """The `sensitivity:` mapping, against `fixed` and `seeds` (already checked as any sweep's)."""
    for key in fixed:
        if ignored(key):
            raise SpecError(f"fixed.{key}: a sensitivity scan prunes one layer at a time by sensitivity.criteria "
                            f"at sensitivity.fractions, without fine-tuning; leave {key} out")
    raw = mapping(raw, "sensitivity")
    for key in raw:
        if key not in ("fractions", "criteria", "layers", "vary"):
            raise SpecError(f"sensitivity.{key}: unknown key (known: fractions, criteria, layers, vary)")
    fractions = tuple(number(f, f"sensitivity.fractions[{i}]") for i, f in
                      enumerate(_list(raw.get("fractions", list(FRACTIONS)), "sensitivity.fractions")))
    for i, f in enumerate(fractions):
        if not 0 < f < 1:
            raise SpecError(f"sensitivity.fractions[{i}]: {f:g} is outside (0, 1); give shares such as 0.1, 0.5, 0.9")
    criteria = tuple(_list(raw.get("criteria", list(CRITERIA)), "sensitivity.criteria"))
    for i, name in enumerate(criteria):
        if name not in CRITERIA or name in criteria[:i]:
            raise SpecError(f"sensitivity.criteria[{i}]: must be one of {', '.join(CRITERIA)}, each once, "
                            f"got {kind(name)}")
    for what, values in (("fractions", fractions), ("criteria", criteria)):
        if len(set(values)) != len(values):
            raise SpecError(f"sensitivity.{what}: repeats a value: {list(values)}")
    configs = _configs(mapping(raw.get("vary", {}), "sensitivity.vary"), fixed, seeds)
    layers = raw.get("layers")
    units = []
    per_config = [(cfg, structures(cfg)) for cfg in configs]
    if layers is not None:
        known = sorted({layer for _, found in per_config for layer, _ in found})
        for i, layer in enumerate(_list(layers, "sensitivity.layers")):
            if layer not in known:
                raise SpecError(f"sensitivity.layers[{i}]: {kind(layer)} is not a prunable layer here "
                                f"(known: {', '.join(known)})")
    # Structure by structure, then seed by seed: the units running side by side need different
    # pretrained models (one would otherwise wait on another's pretraining lock).
    order = list(dict.fromkeys(s for _, found in per_config for s in found))
    for layer, what in order:
        if layers is not None and layer not in layers:
            continue
        for cfg, found in per_config:
            if (layer, what) not in found or not _applicable(criteria, what):
                continue
            data = f" a{cfg.attributes}" if cfg.dataset == "waveform" else ""
            units.append(Unit(f"{cfg.config_hash()[:16]}-{layer}-{what}",
                              f"u{len(units):03d} {layer} {what}{data} s{cfg.seed}", cfg.to_dict(), layer, what))
    if not units:
        raise SpecError(f"sensitivity.criteria: none of {list(criteria)} applies to the layers scanned (filters "
                        f"and units take l1, mean_activation, apoz, random; weights magnitude, random)")
    return ScanPlan(fractions, criteria, tuple(units))


def _applicable(criteria: tuple[str, ...], what: str) -> bool:
    from prunerlib.sensitivity import Target

    return any(c in Target("", what, None).criteria() for c in criteria)  # type: ignore[arg-type]


def _configs(vary: dict[str, Any], fixed: dict[str, Any], seeds: tuple[int, ...]) -> list[TrialConfig]:
    axes = {}
    for key, values in vary.items():
        setting_name(key, f"sensitivity.vary.{key}")
        if key in fixed or key == "seed":
            raise SpecError(f"sensitivity.vary.{key}: set it in one place: fixed, vary, or seeds for the seed")
        if ignored(key):
            raise SpecError(f"sensitivity.vary.{key}: a scan never uses {key} (it prunes without fine-tuning)")
        axes[key] = values if isinstance(values, list) and values else [values]
    configs = []
    for combo in itertools.product(*(enumerate(v) for v in axes.values())):
        point = {key: value for key, (_, value) in zip(axes, combo)}
        paths = {key: f"sensitivity.vary.{key}" + (f"[{at}]" if len(axes[key]) > 1 else "")
                 for key, (at, _) in zip(axes, combo)}
        configs += [config_at({**seeded(fixed, seed), **point}, paths, "sensitivity") for seed in seeds]
    # Rows are keyed by scan (the pretrained model's settings but the seed) and seed: two points
    # differing in anything else (angle_cutoff, device) would be one scan twice.
    if len({(scan_key(cfg), cfg.seed) for cfg in configs}) != len(configs):
        raise SpecError("sensitivity.vary: repeats a scan (a value twice, or values of a setting the pretrained "
                        "model does not depend on); vary data, model or pretraining settings, each value once")
    return configs


def _list(raw: Any, path: str) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{path}: must be a non-empty list, got {kind(raw)}")
    return raw


def plan_text(spec: SweepSpec) -> str:
    """What `--dry-run` prints for a scan."""
    plan = spec.scan
    assert plan is not None
    lines = [f"sweep {spec.name}: sensitivity scan, {len(plan.units)} unit(s) as Tune trials (one structure of one "
             f"seed's pretrained model each), seeds {list(spec.seeds)}",
             f"  fractions {list(plan.fractions)}; criteria {', '.join(plan.criteria)}; no fine-tuning"]
    lines += [f"  {unit.label}" for unit in plan.units]
    lines.append(f"resources: {spec.cpu:g} CPU" + (f", {spec.gpu:g} GPU" if spec.gpu else "") + " per Tune trial, "
                 + (f"{spec.max_concurrent} at once (max_concurrent)" if spec.max_concurrent else "as many at once as "
                    "the nodes hold") + f"; {spec.max_failures} retr{'y' if spec.max_failures == 1 else 'ies'} after a fault")
    return "\n".join(lines)


# --- the sweep folder ------------------------------------------------------------------------
class ScanFolder(SweepFolder):
    """A sweep folder whose per-trial files are units' scan rows, in scans/ (not trials/: the
    report reads a folder with trials/ as a grid's)."""

    def __init__(self, storage: str | Path, name: str):
        super().__init__(storage, name)
        self.trials = self.root / "scans"
        self.scan_file, self.agreement_file = self.root / SCAN_FILE, self.root / AGREEMENT_FILE

    def _unit_file(self, uid: str, what: str) -> Path:
        return self.trials / f"{uid}.{what}"

    def unit_rows(self, uid: str) -> tuple[pa.Table, pa.Table] | None:
        """The unit's (sensitivity, agreement) rows, or None when it has none (a file cut short is
        moved aside, and the unit runs again)."""
        tables = []
        for what in (SCAN_FILE, AGREEMENT_FILE):
            path = self._unit_file(uid, what)
            if not path.exists():
                return None
            try:
                tables.append(pq.read_table(path))
            except (pa.ArrowException, OSError, ValueError):
                os.replace(path, path.with_name(path.name + ".corrupt"))
                print(f"warning: {path} is unreadable; moved aside, its unit will run again", file=sys.stderr)
                return None
        return tables[0], tables[1]

    def failure(self, uid: str) -> dict[str, str] | None:
        path = self._unit_file(uid, "failed.json")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_unit(self, uid: str, sens: pd.DataFrame, agree: pd.DataFrame) -> None:
        # Agreement first: a readable sensitivity file then says the unit is whole.
        for what, frame in ((AGREEMENT_FILE, agree), (SCAN_FILE, sens)):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            atomic_write(self._unit_file(uid, what), lambda tmp, t=table: pq.write_table(t, tmp))
        self._unit_file(uid, "failed.json").unlink(missing_ok=True)

    def write_failure(self, uid: str, unit: Unit, status: str, error: str) -> None:
        record = {"unit": unit.label, "status": status, "error": error}
        atomic_write(self._unit_file(uid, "failed.json"), lambda tmp: tmp.write_text(json.dumps(record)))

    def consolidate_scan(self, units: tuple[Unit, ...]) -> tuple[int, int]:
        """Both files from the units' files; rows of a unit no file holds any more are kept from
        the previous file (it never shrinks). Returns the row counts."""
        found = [t for t in map(self.unit_rows, [u.id for u in units]) if t is not None]
        counts = []
        for i, path in enumerate((self.scan_file, self.agreement_file)):
            frames = [t[i].to_pandas() for t in found if t[i].num_rows]
            new = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            if path.exists() and len(new):
                old = pd.read_parquet(path)
                held = set(map(tuple, new[UNIT_COLUMNS].to_numpy()))
                old = old[[tuple(r) not in held for r in old[UNIT_COLUMNS].to_numpy()]]
                new = pd.concat([old, new], ignore_index=True) if len(old) else new
            if len(new):
                table = pa.Table.from_pandas(new, preserve_index=False)
                atomic_write(path, lambda tmp, t=table: pq.write_table(t, tmp))
            counts.append(len(new) or (pq.read_metadata(path).num_rows if path.exists() else 0))
        return counts[0], counts[1]


# --- inside a Tune trial ---------------------------------------------------------------------
@dataclass(frozen=True)
class ScanContext:
    name: str
    storage: str
    units: dict[str, Unit]  # by label
    fractions: tuple[float, ...]
    criteria: tuple[str, ...]
    threads: int


def scan_unit(params: dict[str, Any], ctx: ScanContext) -> None:
    """One unit, as pack_trial runs a pack: a configuration that cannot be scanned is recorded
    (failed, or error with the traceback for a fault in the code) and the sweep goes on; a fault
    of the machine (is_environment_fault) propagates, for Tune to retry (max_failures)."""
    import ray
    import torch
    from ray import tune

    from prunerlib.devices import resolve_device
    from prunerlib.sensitivity import prepare

    torch.set_num_threads(ctx.threads)
    folder = ScanFolder(ctx.storage, ctx.name)
    unit = ctx.units[params["unit"]]
    clock = time.perf_counter()
    try:
        cfg = TrialConfig.from_dict(unit.settings)
        scanner = prepare(cfg, folder.root, progress=False, device=resolve_device(cfg.device, ray.get_gpu_ids()))
        target = next(t for t in targets(scanner.model) if (t.layer, t.what) == (unit.layer, unit.what))
        rows, pairs = scanner.scan_target(target, ctx.fractions, ctx.criteria)
        sens, agree = scanner.frames(rows, pairs, time.perf_counter() - clock)
    except Exception as exc:
        if is_environment_fault(exc):
            raise
        status = "failed" if isinstance(exc, PrunerlibError) else "error"
        text = str(exc) if status == "failed" else traceback.format_exc()
        folder.write_failure(unit.id, unit, status, text)
        tune.report({"ok": 0, "rows": 0})
        return
    folder.write_unit(unit.id, sens, agree)
    tune.report({"ok": 1, "rows": len(sens), "acc_val_mean": float(sens["acc_val"].mean())})


# --- the driver ------------------------------------------------------------------------------
def run_scan(spec: SweepSpec, storage: str, address: str | None, resume: bool, retry_failed: bool,
             again: str) -> int:
    """run_sweep for `kind: sensitivity`: the same folder rules (lock, spec check, --resume),
    signals, cluster checks and exit codes, over units instead of packs."""
    import ray
    from ray import tune

    from prunerlib.sweep import signals
    from prunerlib.sweep.cluster import check_cluster, check_local_gpu, connect, disconnect
    from prunerlib.sweep.runner import say_errors

    plan = spec.scan
    assert plan is not None
    if retry_failed and not resume:
        raise SpecError("--retry-failed: only with --resume (a new sweep has nothing to retry)")
    started_here = not ray.is_initialized()
    if started_here and address is None:
        check_local_gpu(spec)
    folder = ScanFolder(storage, spec.name)
    folder.begin(spec, resume)
    signals.begin()
    try:
        if started_here:
            connect(address)
        signals.catch()  # again: ray.init installs its own SIGTERM handler
        check_cluster(spec, folder, remote=address is not None, interrupted=signals.interrupted)
        failed = {u.id for u in plan.units if folder.failure(u.id) is not None}
        rerun = frozenset(failed) if retry_failed else frozenset()
        todo = [u.label for u in plan.units
                if u.id in rerun or (folder.unit_rows(u.id) is None and u.id not in failed)]
        if resume:
            print(f"resuming: {len(todo)} of {len(plan.units)} unit(s) to run")
        if todo and not signals.interrupted():
            ctx = ScanContext(spec.name, str(folder.root.parent), {u.label: u for u in plan.units}, plan.fractions,
                              plan.criteria, max(1, int(spec.cpu)))
            trainable = tune.with_resources(tune.with_parameters(scan_unit, ctx=ctx),
                                            {"cpu": spec.cpu, "gpu": spec.gpu})
            tuner = tune.Tuner(trainable, param_space={"unit": tune.grid_search(todo)},
                               tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent,
                                                           reuse_actors=True),
                               run_config=tune.RunConfig(name=folder.tune.name, storage_path=str(folder.root),
                                                         stop=signals.StopOnSignal(),
                                                         failure_config=tune.FailureConfig(
                                                             max_failures=spec.max_failures)))
            try:
                say_errors(tuner.fit(), spec)
            except Exception as exc:  # noqa: BLE001  the units that finished are still the record
                print(f"the sweep's driver failed: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
        rows, pairs = folder.consolidate_scan(plan.units)
        print(f"sensitivity: {folder.scan_file} ({rows} row(s)); agreement: {folder.agreement_file} ({pairs} row(s))")
        print(f"report: prunerlib report {folder.root}")
        return _verdict(spec, folder, again)
    except KeyboardInterrupt:
        signals.RECEIVED.append(signal.SIGINT)
        print(f"interrupted; continue with: {again}", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        folder.release()
        if started_here:
            disconnect()
        signals.release()


def _verdict(spec: SweepSpec, folder: ScanFolder, again: str) -> int:
    from prunerlib.sweep import signals

    units = spec.scan.units if spec.scan else ()
    have = {u.id for u in units if folder.unit_rows(u.id) is not None}
    failed = {u.id: f for u in units if u.id not in have and (f := folder.failure(u.id)) is not None}
    if signals.interrupted():
        name = signal.Signals(signals.RECEIVED[0]).name
        print(f"interrupted by {name}: {len(have)} of {len(units)} unit(s) have rows; continue with: {again}",
              file=sys.stderr)
        return 128 + signals.RECEIVED[0]
    for record in list(failed.values())[:5]:
        print(f"unit {record['unit']}: {record['status']}: {record['error'].strip().splitlines()[-1][:200]}",
              file=sys.stderr)
    if len(have) + len(failed) < len(units):
        print(f"incomplete: {len(units) - len(have) - len(failed)} of {len(units)} unit(s) have no rows (see "
              f"{folder.tune} for Tune's errors); continue with: {again}", file=sys.stderr)
        return 1
    if failed:
        print(f"{len(failed)} of {len(units)} unit(s) failed (in {folder.trials}/*.failed.json); once fixed, "
              f"rerun them with: {again} --retry-failed", file=sys.stderr)
        return 1
    return 0
