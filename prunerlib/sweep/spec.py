"""A sweep spec (YAML): what to run, validated whole before anything starts.

    name: paper_waveform
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
    max_concurrent: 4                     # Tune trials at once (default: as resources allow)
    max_failures: 1                       # retries of a Tune trial after an infrastructure fault
    pack_size: auto                       # trial configurations per Tune trial (auto: see plan.py)
    max_configurations: 1000000           # a larger grid is refused before it is expanded

Every mistake is reported as one `SpecError` naming the key path (`grid[1].angle_cutoff[2]`).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from prunerlib import plugins, registry
from prunerlib.config import _MAX_SEED, TrialConfig, _show, setting_hints, unknown_setting
from prunerlib.errors import ConfigError

log = logging.getLogger("prunerlib.sweep.spec")

Sampler = Literal["tpe", "nsga2", "random", "grid"]
SAMPLERS = ("tpe", "nsga2", "random", "grid")
# Metrics of a trial's final row that a search can optimise. Accuracy is the validation slice's:
# choosing settings on the test set would bias every test figure reported for them (SPEC §5).
OBJECTIVE_METRICS = (
    "val_acc_finetuned", "val_acc_pruned", "units_removed_frac", "weights_removed_frac", "filters_removed_frac",
    "compression_ratio", "theoretical_speedup", "params_nonzero", "flops_pruned",
)
# Test-set accuracies a row carries, refused as objectives, and the validation metric to use instead.
TEST_METRICS = {"acc_finetuned": "val_acc_finetuned", "acc_pruned": "val_acc_pruned", "acc_pretrain": "val_acc_pretrain",
                "train_acc_pretrain": "val_acc_pretrain", "train_acc_finetuned": "val_acc_finetuned"}
PER_SEED = "per_seed"  # fixed.data_seed: every trial's data split is drawn from its own seed
_TOP_KEYS = ("name", "description", "plugins", "fixed", "seeds", "grid", "search", "resources", "max_concurrent",
             "max_failures", "pack_size", "max_configurations")
# The sweep folder is named after the spec and Tune nests its own names below it: well within
# the file system's 255 bytes per name.
_MAX_NAME = 100
_MAX_CONFIGURATIONS = 10**6
# Settings whose single value is a list: in a grid, only a list of such lists is an axis.
_LIST_VALUED = ("conv_channels", "threshold_layers")


class SpecError(ConfigError):
    """The spec cannot run; the message starts with the key path of the problem."""


@dataclass(frozen=True)
class Range:
    """A numeric search dimension."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Search:
    sampler: Sampler
    num_samples: int
    objectives: tuple[tuple[str, str], ...]  # (metric, "max" | "min")
    space: dict[str, Range | tuple[Any, ...]]  # a tuple is a categorical choice
    seed: int = 0
    sampler_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the sampler


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


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and validate a spec file; `overrides` replace or add `fixed` settings."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if overrides:
        raw = {**raw, "fixed": {**(raw.get("fixed") or {}), **overrides}} if isinstance(raw, dict) else raw
    try:
        return parse_spec(raw, path.parent)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec(raw: Any, base: Path | None = None) -> SweepSpec:
    """Validate a spec; relative `plugins:` paths are taken from `base` (the spec file's folder)."""
    if not isinstance(raw, dict):
        raise SpecError(f"spec: must be a mapping of {', '.join(_TOP_KEYS)}, got {_kind(raw)}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise SpecError(f"{key}: unknown key (known: {', '.join(_TOP_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SpecError(f"name: must be a folder-safe name (letters, digits, _ . -), got {_kind(name)}")
    if len(name) > _MAX_NAME:
        raise SpecError(f"name: at most {_MAX_NAME} characters (it names the sweep folder), got {len(name)}")
    plugin_paths = _plugins(raw.get("plugins", []), base)
    fixed = _mapping(raw.get("fixed", {}), "fixed")
    for key in fixed:
        _setting_name(key, f"fixed.{key}")
    if "seed" in fixed:
        raise SpecError("fixed.seed: list seeds under the top-level 'seeds' key instead")
    fixed = _absolute_data(fixed)
    _data_seed(fixed.get("data_seed", 0))
    seeds = _seeds(raw.get("seeds", [0]))
    if "grid" not in raw and "search" not in raw:
        raise SpecError("grid: a spec needs a grid or a search")
    if "grid" in raw and "search" in raw:
        raise SpecError("search: a spec runs a grid or a search, not both; put the search in a spec of its own")
    limit = _integer(raw.get("max_configurations", _MAX_CONFIGURATIONS), "max_configurations", low=1)
    grid = _grid(raw.get("grid", []), fixed, seeds, limit) if "grid" in raw else ()
    search = _search(raw["search"], fixed, seeds) if "search" in raw else None
    resources = _mapping(raw.get("resources", {}), "resources")
    for key in resources:
        if key not in ("cpu", "gpu"):
            raise SpecError(f"resources.{key}: unknown key (known: cpu, gpu)")
    cpu = _number(resources.get("cpu", 1), "resources.cpu", low=0, open_low=True)
    gpu = _number(resources.get("gpu", 0), "resources.gpu", low=0)
    if gpu > 1:
        raise SpecError(f"resources.gpu: a trial uses one GPU; give at most 1 (a fraction shares a GPU between "
                        f"trials), got {gpu:g}")
    _check_devices(raw, gpu)
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _integer(max_concurrent, "max_concurrent", low=1, high=10**6)
    return SweepSpec(
        name=name, fixed=fixed, seeds=seeds, grid=grid, search=search, cpu=cpu, gpu=gpu,
        max_concurrent=max_concurrent,
        max_failures=_integer(raw.get("max_failures", 1), "max_failures", low=0, high=1000),
        pack_size=_pack_size(raw.get("pack_size", "auto")), raw=raw, plugins=plugin_paths,
    )


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
        raise SpecError(f"grid: must be a non-empty list of sub-grids (mappings of settings), got {_kind(raw)}")
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
                cfg = _config({**seeded(fixed, seed), **point}, paths, where)
                previous = configs.get(cfg)
                if previous is not None:
                    raise SpecError(f"{where}: repeats a configuration of {previous} ({_describe(point)})")
                configs[cfg] = where
    return tuple(configs)


def _axes(entry: Any, where: str) -> dict[str, list[Any]]:
    """A sub-grid's settings as axes: a list value is an axis, any other value an axis of one."""
    entry = _mapping(entry, where)
    if not entry:
        raise SpecError(f"{where}: empty sub-grid; give at least a pruner")
    axes: dict[str, list[Any]] = {}
    for key, value in entry.items():
        _setting_name(key, f"{where}.{key}")
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


def _search(raw: Any, fixed: dict[str, Any], seeds: tuple[int, ...]) -> Search:
    raw = _mapping(raw, "search")
    known = ("sampler", "sampler_options", "num_samples", "objectives", "space", "seed")
    for key in raw:
        if key not in known:
            raise SpecError(f"search.{key}: unknown key (known: {', '.join(known)})")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise SpecError(f"search.sampler: must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    objectives_raw = _mapping(raw.get("objectives"), "search.objectives")
    if not objectives_raw:
        raise SpecError("search.objectives: name at least one metric with max or min, e.g. {val_acc_finetuned: max}")
    objectives = []
    for metric, mode in objectives_raw.items():
        if metric in TEST_METRICS:
            raise SpecError(f"search.objectives.{metric}: a test-set metric; choosing settings on test data biases "
                            f"every number reported for them: optimise {TEST_METRICS[metric]} instead")
        if metric not in OBJECTIVE_METRICS:
            raise SpecError(f"search.objectives.{metric}: not an objective (one of {', '.join(OBJECTIVE_METRICS)})")
        if mode not in ("max", "min"):
            raise SpecError(f"search.objectives.{metric}: must be max or min, got {mode!r}")
        if metric == "filters_removed_frac" and fixed.get("dataset", "waveform") == "waveform":
            raise SpecError(f"search.objectives.{metric}: the Waveform FFN has no conv filters; this objective "
                            f"needs dataset catsdogs")
        objectives.append((metric, mode))
    space_raw = _mapping(raw.get("space"), "search.space")
    if not space_raw:
        raise SpecError("search.space: give at least one setting to search, e.g. {threshold_factor: {low: 0.5, high: 2}}")
    space: dict[str, Range | tuple[Any, ...]] = {}
    for key, dim in space_raw.items():
        path = f"search.space.{key}"
        _setting_name(key, path)
        if key == "seed":
            raise SpecError(f"{path}: seeds are not searched; list them under 'seeds'")
        space[key] = dim = _dimension(dim, path, grid_sampler=sampler == "grid")
        extremes = ([int(dim.low), int(dim.high)] if dim.integer else [dim.low, dim.high]) \
            if isinstance(dim, Range) else list(dim)
        for value in extremes:  # a range valid at both ends is valid throughout
            _config({**seeded(fixed, seeds[0]), key: value}, {key: path}, path)
    num_samples = _integer(raw.get("num_samples", 10), "search.num_samples", low=1)
    options = _sampler_options(raw.get("sampler_options"), sampler, space, num_samples)
    if sampler == "grid":
        points = 1
        for dim in space.values():
            points *= len(dim)
        if num_samples > points:
            raise SpecError(f"search.num_samples: the grid sampler's space has only {points} point(s), "
                            f"got {num_samples}")
    return Search(sampler, num_samples, tuple(objectives), space, _integer(raw.get("seed", 0), "search.seed", low=0),
                  options)


def sampler_class(sampler: str) -> type:
    import optuna

    return {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "random": optuna.samplers.RandomSampler, "grid": optuna.samplers.GridSampler}[sampler]


def sampler_options(sampler: str) -> dict[str, Any]:
    """The options a spec may set: the sampler's keyword arguments that YAML can spell (not
    callables or strategy objects), with their defaults. The seed is search.seed."""
    import inspect

    params = inspect.signature(sampler_class(sampler)).parameters.values()
    return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY and p.name != "seed"
            and not any(word in str(p.annotation) for word in ("Callable", "Base", "Mapping"))}


# The option that sets how many points a sampler draws at random before it learns anything.
_RANDOM_START = {
    "nsga2": ("population_size", "NSGA-II never leaves its first, random generation"),
    "tpe": ("n_startup_trials", "TPE never leaves its random startup trials"),
}


def _sampler_options(raw: Any, sampler: str, space: dict[str, Any], num_samples: int) -> dict[str, Any]:
    options = _mapping(raw, "search.sampler_options")
    known = sampler_options(sampler)
    for key in options:
        if key not in known:
            raise SpecError(f"search.sampler_options.{key}: not an option of the {sampler} sampler "
                            f"(valid: {', '.join(known) or 'none'})")
    try:  # the sampler checks its own values (population_size >= 2, ...)
        sampler_class(sampler)(**options, **({"search_space": {k: list(v) for k, v in space.items()}}
                                             if sampler == "grid" else {}))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"search.sampler_options: the {sampler} sampler refuses {options}: {exc}") from None
    # A search that never gets past the sampler's random start is random search under another name.
    if sampler in _RANDOM_START:
        option, what = _RANDOM_START[sampler]
        start = options.get(option, known[option])
        if num_samples <= start:
            raise SpecError(f"search.num_samples: {what} with {num_samples} point(s) and {option} {start}; "
                            f"ask for more points or set search.sampler_options.{option} below {num_samples}")
    return options


def seeded(fixed: dict[str, Any], seed: int) -> dict[str, Any]:
    """A trial's settings at `seed`; with data_seed: per_seed the data split follows the seed."""
    return {**fixed, "seed": seed, **({"data_seed": seed} if fixed.get("data_seed") == PER_SEED else {})}


def _data_seed(raw: Any) -> None:
    if raw != PER_SEED and (isinstance(raw, bool) or not isinstance(raw, int) or raw < 0):
        raise SpecError(f"fixed.data_seed: must be an integer >= 0 (one split for every seed) or {PER_SEED} "
                        f"(each seed its own split), got {raw!r}")


def _dimension(raw: Any, path: str, grid_sampler: bool) -> Range | tuple[Any, ...]:
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{path}: empty list of choices")
        return tuple(raw)
    if grid_sampler:
        raise SpecError(f"{path}: the grid sampler needs a list of values, not a range")
    dim = _mapping(raw, path)
    for key in dim:
        if key not in ("low", "high", "log", "int"):
            raise SpecError(f"{path}.{key}: unknown key (known: low, high, log, int)")
    if "low" not in dim or "high" not in dim:
        raise SpecError(f"{path}: a range needs low and high (or give a list of choices)")
    low, high = _number(dim["low"], f"{path}.low"), _number(dim["high"], f"{path}.high")
    if not low < high:
        raise SpecError(f"{path}: low must be below high, got {low} and {high}")
    log, integer = dim.get("log", False), dim.get("int", False)
    for key, flag in (("log", log), ("int", integer)):
        if not isinstance(flag, bool):
            raise SpecError(f"{path}.{key}: must be true or false, got {flag!r}")
    if log and low <= 0:
        raise SpecError(f"{path}.low: a log range must start above 0, got {low}")
    return Range(low, high, log, integer)


# --------------------------------------------------------------------------------------------
def _config(settings: dict[str, Any], paths: dict[str, str], where: str) -> TrialConfig:
    """Build one trial's config; a setting it rejects is reported at the key path that set it."""
    try:
        return TrialConfig.from_dict(settings)
    except ConfigError as exc:
        key, _, problem = str(exc).partition(": ")
        if key in paths:
            raise SpecError(f"{paths[key]}: {problem}") from None
        if key in settings:  # set under fixed
            raise SpecError(f"fixed.{key}: {problem}") from None
        raise SpecError(f"{where}: {exc}") from None


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
                        f"got {_kind(raw)}")
    return raw


def _seeds(raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"seeds: must be a non-empty list of integers, got {_kind(raw)}")
    seeds = tuple(_integer(s, f"seeds[{i}]", low=0, high=_MAX_SEED) for i, s in enumerate(raw))
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"seeds: repeats a seed: {list(seeds)}")
    return seeds


def _setting_name(key: Any, path: str) -> None:
    if key not in setting_hints():
        hint = unknown_setting(key).partition(": unknown setting ")[2]
        raise SpecError(f"{path}: unknown trial setting {hint}")


def _plugins(raw: Any, base: Path | None) -> tuple[str, ...]:
    """Import the spec's plugin files now (their pruners' settings are validated below) and
    keep their absolute paths, for every Ray worker to import before it runs a pack."""
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise SpecError(f"plugins: must be a list of Python file paths, got {_kind(raw)}")
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


def _mapping(raw: Any, path: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: must be a mapping, got {_kind(raw)}")
    return raw


def _number(raw: Any, path: str, low: float | None = None, open_low: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise SpecError(f"{path}: must be a number, got {_kind(raw)}")
    if not (-1e300 < raw < 1e300):  # NaN and the infinities fail every range check below; huge ints overflow
        raise SpecError(f"{path}: must be a finite number, got {_show(raw)}")
    if low is not None and (raw <= low if open_low else raw < low):
        raise SpecError(f"{path}: must be {'above' if open_low else 'at least'} {low}, got {raw}")
    return float(raw)


def _integer(raw: Any, path: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"{path}: must be an integer, got {_kind(raw)}")
    if low is not None and raw < low:
        raise SpecError(f"{path}: must be at least {low}, got {_show(raw)}")
    if high is not None and raw > high:
        raise SpecError(f"{path}: must be at most {high}, got {_show(raw)}")
    return raw


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
