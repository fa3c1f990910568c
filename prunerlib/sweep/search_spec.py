"""The `search:` section of a sweep spec: an Optuna study's sampler, its options, the points
to ask for, the objectives (validation metrics only) and the space of settings searched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from prunerlib.sweep.checks import SpecError, config_at, integer, mapping, number, seeded, setting_name

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


def parse_search(raw: Any, fixed: dict[str, Any], seeds: tuple[int, ...]) -> Search:
    raw = mapping(raw, "search")
    known = ("sampler", "sampler_options", "num_samples", "objectives", "space", "seed")
    for key in raw:
        if key not in known:
            raise SpecError(f"search.{key}: unknown key (known: {', '.join(known)})")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise SpecError(f"search.sampler: must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    objectives_raw = mapping(raw.get("objectives"), "search.objectives")
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
    space_raw = mapping(raw.get("space"), "search.space")
    if not space_raw:
        raise SpecError("search.space: give at least one setting to search, e.g. {threshold_factor: {low: 0.5, high: 2}}")
    space: dict[str, Range | tuple[Any, ...]] = {}
    for key, dim in space_raw.items():
        path = f"search.space.{key}"
        setting_name(key, path)
        if key == "seed":
            raise SpecError(f"{path}: seeds are not searched; list them under 'seeds'")
        space[key] = dim = _dimension(dim, path, grid_sampler=sampler == "grid")
        extremes = ([int(dim.low), int(dim.high)] if dim.integer else [dim.low, dim.high]) \
            if isinstance(dim, Range) else list(dim)
        for value in extremes:  # a range valid at both ends is valid throughout
            config_at({**seeded(fixed, seeds[0]), key: value}, {key: path}, path)
    num_samples = integer(raw.get("num_samples", 10), "search.num_samples", low=1)
    options = _sampler_options(raw.get("sampler_options"), sampler, space, num_samples)
    if sampler == "grid":
        points = 1
        for dim in space.values():
            points *= len(dim)
        if num_samples > points:
            raise SpecError(f"search.num_samples: the grid sampler's space has only {points} point(s), "
                            f"got {num_samples}")
    return Search(sampler, num_samples, tuple(objectives), space, integer(raw.get("seed", 0), "search.seed", low=0),
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
    options = mapping(raw, "search.sampler_options")
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


def _dimension(raw: Any, path: str, grid_sampler: bool) -> Range | tuple[Any, ...]:
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{path}: empty list of choices")
        return tuple(raw)
    if grid_sampler:
        raise SpecError(f"{path}: the grid sampler needs a list of values, not a range")
    dim = mapping(raw, path)
    for key in dim:
        if key not in ("low", "high", "log", "int"):
            raise SpecError(f"{path}.{key}: unknown key (known: low, high, log, int)")
    if "low" not in dim or "high" not in dim:
        raise SpecError(f"{path}: a range needs low and high (or give a list of choices)")
    low, high = number(dim["low"], f"{path}.low"), number(dim["high"], f"{path}.high")
    if not low < high:
        raise SpecError(f"{path}: low must be below high, got {low} and {high}")
    log, integer = dim.get("log", False), dim.get("int", False)
    for key, flag in (("log", log), ("int", integer)):
        if not isinstance(flag, bool):
            raise SpecError(f"{path}.{key}: must be true or false, got {flag!r}")
    if log and low <= 0:
        raise SpecError(f"{path}.low: a log range must start above 0, got {low}")
    return Range(low, high, log, integer)
