"""A sweep spec (YAML): what to run, validated whole before anything starts.

    name: paper_waveform
    plugins: [../my_pruner.py]            # your own pruners' files (relative to this file)
    fixed: {dataset: waveform}            # TrialConfig settings every trial shares;
                                          # data_seed: per_seed gives each seed its own split
    seeds: [0, 1, 2, 3, 4]
    grid:                                 # per-pruner sub-grids; a list value is a grid axis
      - {pruner: distinctiveness, attributes: [21, 40], angle_cutoff: [10, 15, 20]}
      - {pruner: threshold, attributes: [21, 40], threshold_factor: [0.5, 1.0]}
      - {pruner: none, attributes: [21, 40]}
    search:                               # instead of a grid: an Optuna study
      sampler: nsga2                      # tpe | nsga2 | random | grid
      sampler_options: {population_size: 8}   # keyword arguments of the Optuna sampler
      num_samples: 40                     # nsga2: above population_size; tpe: above n_startup_trials
      objectives: {val_acc_finetuned: max, weights_removed_frac: max}   # validation metrics only
      space: {threshold_factor: {low: 0.25, high: 2.5}, pruner: [threshold]}
    resources: {cpu: 1, gpu: 0}           # per Tune trial; gpu at most 1 (a fraction shares one GPU)
    max_concurrent: 16                    # Tune trials planned at once, even beyond what the cluster holds
                                          # now (an autoscaler adds nodes for the rest); default: as nodes hold
    max_failures: 1                       # retries of a Tune trial after an infrastructure fault
    pack_size: auto                       # trial configurations per Tune trial (auto: see plan.py)
    max_configurations: 1000000           # a larger grid is refused before it is expanded
    save_models: final                    # each trial's compacted model in <sweep>/models: final | all_cycles | none
    measure_latency: true                 # time dense and pruned networks (latency_ms_* columns)
    latency_batch: 256                    # the batch size timed, besides batch 1
    callbacks: [tensorboard]              # each configuration as a run: tensorboard | mlflow | wandb

`kind: sensitivity` makes the sweep a sensitivity scan instead (its `sensitivity:` keys and the
few others it takes are in `prunerlib.sweep.sensitivity`).

Every mistake is reported as one `SpecError` naming the key path (`grid[1].angle_cutoff[2]`).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml

from prunerlib import plugins, registry
from prunerlib.config import _MAX_SEED, TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.saved import SaveModels
from prunerlib.sweep.checks import (PER_SEED, SpecError, config_at, integer, kind, mapping, number,
                                    seeded, setting_name)
from prunerlib.sweep.search_spec import Search, parse_search

log = logging.getLogger("prunerlib.sweep.spec")

_TOP_KEYS = ("name", "description", "kind", "plugins", "fixed", "seeds", "grid", "search", "sensitivity", "resources",
             "max_concurrent", "max_failures", "pack_size", "max_configurations", "save_models", "measure_latency",
             "latency_batch", "callbacks")
# The sweep folder is named after the spec and Tune nests its own names below it: well within
# the file system's 255 bytes per name.
_MAX_NAME = 100
_MAX_CONFIGURATIONS = 10**6
# Settings whose single value is a list: in a grid, only a list of such lists is an axis.
_LIST_VALUED = ("conv_channels", "threshold_layers")
# callbacks (sweep/loggers.py): the module each needs, and what installs it
_CALLBACKS = {"tensorboard": ("tensorboardX", "ray[tune]"), "mlflow": ("mlflow", "prunerlib[mlflow]"),
              "wandb": ("wandb", "prunerlib[wandb]")}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    fixed: dict[str, Any]
    seeds: tuple[int, ...]
    grid: tuple[TrialConfig, ...]  # expanded: every configuration × every seed
    search: Search | None
    cpu: float
    gpu: float
    max_concurrent: int | None
    max_failures: int
    pack_size: int | None  # None = auto
    raw: dict[str, Any] = field(repr=False)  # the spec as written, for the sweep folder
    plugins: tuple[str, ...] = ()  # absolute paths of the pruner files every process imports first
    save_models: SaveModels = "final"
    latency_batch: int | None = 256  # None: measure_latency false
    callbacks: tuple[str, ...] = ()  # experiment trackers each configuration is logged to
    kind: str = "trials"  # or "sensitivity": a scan (prunerlib.sweep.sensitivity), its units in `scan`
    scan: Any = None  # sensitivity.ScanPlan


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and validate a spec file; `overrides` replace or add `fixed` settings."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if overrides and isinstance(raw, dict):
        raw = _overridden(raw, overrides)
    try:
        return parse_spec(raw, path.parent)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def _overridden(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The spec with `--set` values in: a top-level key (`seeds`, `name`, `save_models`, ...) or a
    dotted path (`search.num_samples`, `resources.gpu`, `fixed.lr`) replaces what the file says,
    and any other key is a trial setting under `fixed`. parse_spec then checks the result, so a
    bad value is reported at its key path like one written in the file."""
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        path = key.split(".") if "." in key or key in _TOP_KEYS else ["fixed", key]
        if path[0] not in _TOP_KEYS:
            raise SpecError(f"--set {key}: {path[0]} is not a spec key (known: {', '.join(_TOP_KEYS)}); a trial "
                            f"setting is set without a dot")
        node = raw
        for depth, part in enumerate(path[:-1]):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise SpecError(f"--set {key}: {'.'.join(path[:depth + 1])} is {kind(node)} in the spec, not a mapping")
        node[path[-1]] = value
    return raw


def parse_spec(raw: Any, base: Path | None = None) -> SweepSpec:
    """Validate a spec; relative `plugins:` paths are taken from `base` (the spec file's folder)."""
    if not isinstance(raw, dict):
        raise SpecError(f"spec: must be a mapping of {', '.join(_TOP_KEYS)}, got {kind(raw)}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise SpecError(f"{key}: unknown key (known: {', '.join(_TOP_KEYS)})")
    sweep_kind = _choice(raw.get("kind", "trials"), "kind", ("trials", "sensitivity"))
    if sweep_kind == "sensitivity":
        from prunerlib.sweep.sensitivity import SCAN_KEYS, parse_scan

        for key in raw:
            if key not in SCAN_KEYS:
                raise SpecError(f"{key}: not for a sensitivity sweep (kind: sensitivity), which scans "
                                f"sensitivity.criteria at sensitivity.fractions; it takes {', '.join(SCAN_KEYS)}")
    elif "sensitivity" in raw:
        raise SpecError("sensitivity: only in a spec of kind: sensitivity (add it, and drop grid or search)")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SpecError(f"name: must be a folder-safe name (letters, digits, _ . -), got {kind(name)}")
    if len(name) > _MAX_NAME:
        raise SpecError(f"name: at most {_MAX_NAME} characters (it names the sweep folder), got {len(name)}")
    plugin_paths = _plugins(raw.get("plugins", []), base)
    fixed = mapping(raw.get("fixed", {}), "fixed")
    for key in fixed:
        setting_name(key, f"fixed.{key}")
    if "seed" in fixed:
        raise SpecError("fixed.seed: list seeds under the top-level 'seeds' key instead")
    fixed = _absolute_data(fixed)
    _data_seed(fixed.get("data_seed", 0))
    seeds = _seeds(raw.get("seeds", [0]))
    scan = parse_scan(raw.get("sensitivity", {}), fixed, seeds) if sweep_kind == "sensitivity" else None
    if "grid" not in raw and "search" not in raw and not scan:
        raise SpecError("grid: a spec needs a grid or a search")
    if "grid" in raw and "search" in raw:
        raise SpecError("search: a spec runs a grid or a search, not both; put the search in a spec of its own")
    limit = integer(raw.get("max_configurations", _MAX_CONFIGURATIONS), "max_configurations", low=1)
    grid = _grid(raw.get("grid", []), fixed, seeds, limit) if "grid" in raw else ()
    search = parse_search(raw["search"], fixed, seeds) if "search" in raw else None
    resources = mapping(raw.get("resources", {}), "resources")
    for key in resources:
        if key not in ("cpu", "gpu"):
            raise SpecError(f"resources.{key}: unknown key (known: cpu, gpu)")
    cpu = number(resources.get("cpu", 1), "resources.cpu", low=0, open_low=True)
    gpu = number(resources.get("gpu", 0), "resources.gpu", low=0)
    if gpu > 1:
        raise SpecError(f"resources.gpu: a trial uses one GPU; give at most 1 (a fraction shares a GPU between "
                        f"trials), got {gpu:g}")
    _check_devices(raw, gpu)
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = integer(max_concurrent, "max_concurrent", low=1, high=10**6)
    latency_batch = integer(raw.get("latency_batch", 256), "latency_batch", low=1, high=10**6)
    return SweepSpec(
        name=name, fixed=fixed, seeds=seeds, grid=grid, search=search, cpu=cpu, gpu=gpu,
        max_concurrent=max_concurrent,
        max_failures=integer(raw.get("max_failures", 1), "max_failures", low=0, high=1000),
        pack_size=_pack_size(raw.get("pack_size", "auto")), raw=raw, plugins=plugin_paths,
        save_models=_choice(raw.get("save_models", "final"), "save_models", get_args(SaveModels)),
        latency_batch=latency_batch if _choice(raw.get("measure_latency", True), "measure_latency", (True, False))
        else None,
        callbacks=_callbacks(raw.get("callbacks", [])), kind=sweep_kind, scan=scan,
    )


def _choice(value: Any, key: str, choices: tuple[Any, ...]) -> Any:
    if isinstance(value, bool) != isinstance(choices[0], bool) or value not in choices:
        shown = " | ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        raise SpecError(f"{key}: must be {shown}, got {kind(value)}")
    return value


def _callbacks(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise SpecError(f"callbacks: must be a list of {', '.join(_CALLBACKS)}, got {kind(raw)}")
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in _CALLBACKS or name in raw[:i]:
            raise SpecError(f"callbacks[{i}]: must be one of {', '.join(_CALLBACKS)}, each once, got {kind(name)}")
        module, extra = _CALLBACKS[name]
        if importlib.util.find_spec(module) is None:
            raise SpecError(f"callbacks[{i}]: {name} needs the {module} package: pip install '{extra}'")
    return tuple(raw)


def _check_devices(raw: dict[str, Any], gpu: float) -> None:
    """A trial's `device` against its GPU share. In a Tune trial `auto` is the GPU Ray assigned
    (cuda:0 of the GPUs the trial sees) or the CPU; a CUDA device without a GPU share would
    take a GPU no one reserved."""
    places = [("fixed.device", raw.get("fixed", {}).get("device"))]
    for i, entry in enumerate(raw.get("grid") or []):
        value = entry.get("device") if isinstance(entry, dict) else None
        places += [(f"grid[{i}].device" + (f"[{j}]" if isinstance(value, list) else ""), v)
                   for j, v in enumerate(value if isinstance(value, list) else [value])]
    if "device" in ((raw.get("search") or {}).get("space") or {}):
        raise SpecError("search.space.device: the device is not searched; set it under fixed (or leave it auto)")
    warned = False
    for path, value in places:
        if value is None or value == "auto":
            continue
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, TypeError):
            raise SpecError(f"{path}: {value!r} is not a torch device (auto, cpu, cuda)") from None
        if device.type == "cuda" and not gpu:
            raise SpecError(f"{path}: {value} needs a GPU, but resources.gpu is 0; give trials a GPU share "
                            f"(resources.gpu: 1, or 0.25 to share one) or use device: auto")
        if device.type == "cuda" and device.index:
            raise SpecError(f"{path}: {value}: a trial sees only the GPU Ray assigned it, as cuda:0; use cuda or auto")
        if device.type == "cpu" and gpu and not warned:
            log.warning("%s: cpu beside resources.gpu %g: each trial holds a GPU share it does not use", path, gpu)
            warned = True


# --------------------------------------------------------------------------------------------
def _grid(raw: Any, fixed: dict[str, Any], seeds: tuple[int, ...], limit: int) -> tuple[TrialConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"grid: must be a non-empty list of sub-grids (mappings of settings), got {kind(raw)}")
    subgrids = [_axes(entry, f"grid[{i}]") for i, entry in enumerate(raw)]
    # Counted from the axes before anything is expanded, so a mistaken 10^9 grid fails at once.
    size = sum(math.prod(len(values) for values in axes.values()) for axes in subgrids) * len(seeds)
    if size > limit:
        raise SpecError(f"grid: {size} trial configurations (sub-grids × seeds) exceed max_configurations {limit}; "
                        f"split the sweep or raise max_configurations")
    configs: dict[TrialConfig, str] = {}  # a frozen dataclass hashes and compares by its settings
    for i, axes in enumerate(subgrids):
        where = f"grid[{i}]"
        for combo in itertools.product(*(enumerate(values) for values in axes.values())):
            point = {key: value for key, (_, value) in zip(axes, combo)}
            paths = {key: f"{where}.{key}" + (f"[{at}]" if len(axes[key]) > 1 else "")
                     for key, (at, _) in zip(axes, combo)}
            for seed in seeds:
                cfg = config_at({**seeded(fixed, seed), **point}, paths, where)
                previous = configs.get(cfg)
                if previous is not None:
                    raise SpecError(f"{where}: repeats a configuration of {previous} ({_point_text(point)})")
                configs[cfg] = where
    return tuple(configs)


def _axes(entry: Any, where: str) -> dict[str, list[Any]]:
    """A sub-grid's settings as axes: a list value is an axis, any other value an axis of one."""
    entry = mapping(entry, where)
    if not entry:
        raise SpecError(f"{where}: empty sub-grid; give at least a pruner")
    axes: dict[str, list[Any]] = {}
    for key, value in entry.items():
        setting_name(key, f"{where}.{key}")
        if key == "seed":
            raise SpecError(f"{where}.seed: list seeds under the top-level 'seeds' key instead")
        if isinstance(value, list) and (key not in _LIST_VALUED or all(isinstance(v, list) for v in value)):
            if not value:
                raise SpecError(f"{where}.{key}: empty list leaves the sub-grid with no trial")
            axes[key] = value
        else:
            axes[key] = [value]
    _check_method_settings(entry, where)
    return axes


def _check_method_settings(entry: dict[str, Any], where: str) -> None:
    """A sub-grid may vary only its own pruner's settings (a companion's, filter ranking's, go
    beside any pruner), so that cutoffs pair only with distinctiveness, factors with threshold."""
    pruners = entry.get("pruner", "none")
    pruners = pruners if isinstance(pruners, list) else [pruners]
    match = entry.get("match")
    for key in entry:
        owner = registry.setting_owner(key)
        if owner is None or registry.PRUNERS[owner].companion:
            continue
        if any(p != owner and not (p == "random" and match == owner) for p in pruners):
            raise SpecError(f"{where}.{key}: applies to pruner {owner} only; put it in a sub-grid of its own "
                            f"(this one has pruner {pruners if len(pruners) > 1 else pruners[0]})")


def _data_seed(raw: Any) -> None:
    if raw != PER_SEED and (isinstance(raw, bool) or not isinstance(raw, int) or raw < 0):
        raise SpecError(f"fixed.data_seed: must be an integer >= 0 (one split for every seed) or {PER_SEED} "
                        f"(each seed its own split), got {raw!r}")


# --------------------------------------------------------------------------------------------
def _absolute_data(fixed: dict[str, Any]) -> dict[str, Any]:
    """Trials run in Tune's own folders, so a relative data path is made absolute here, and a
    missing one is reported now rather than by every trial."""
    data = fixed.get("data")
    if data is None:
        return fixed
    if not isinstance(data, str):
        raise SpecError(f"fixed.data: expected a path, got {data!r}")
    path = Path(data).expanduser().resolve()
    if not path.exists():
        raise SpecError(f"fixed.data: {data} does not exist")
    return {**fixed, "data": str(path)}


def _pack_size(raw: Any) -> int | None:
    if raw == "auto":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= _MAX_CONFIGURATIONS:
        raise SpecError(f"pack_size: must be auto or a whole number of configurations, 1 to {_MAX_CONFIGURATIONS}, "
                        f"got {kind(raw)}")
    return raw


def _seeds(raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"seeds: must be a non-empty list of integers, got {kind(raw)}")
    seeds = tuple(integer(s, f"seeds[{i}]", low=0, high=_MAX_SEED) for i, s in enumerate(raw))
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"seeds: repeats a seed: {list(seeds)}")
    return seeds


def _plugins(raw: Any, base: Path | None) -> tuple[str, ...]:
    """Import the spec's plugin files now (their pruners' settings are validated below) and
    keep their absolute paths, for every Ray worker to import before it runs a pack."""
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise SpecError(f"plugins: must be a list of Python file paths, got {kind(raw)}")
    paths = []
    for i, item in enumerate(raw):
        path = Path(item).expanduser()
        path = (base / path if base is not None and not path.is_absolute() else path).resolve()
        try:
            plugins.load([path])
        except ConfigError as exc:
            raise SpecError(f"plugins[{i}]: {str(exc).partition(': ')[2] or exc}") from None
        paths.append(str(path))
    return tuple(paths)


def _point_text(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
