"""One trial's settings: defaults, validation, hashing.

A `TrialConfig` is the fixed contract of an experiment (params in); `pipeline.run_trial`
turns it into result rows (metrics out). Everything that changes a result lives here, so
the config hash identifies the result and the pretrain key identifies the pretrained model.
Settings that only change *where* things go (output paths, cache folders, threads) do not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_type_hints

from prunerlib.errors import ConfigError

Dataset = Literal["waveform", "catsdogs"]
ModelName = Literal["ffn", "cnn"]
PrunerName = Literal["distinctiveness", "threshold", "filters", "none", "random"]
FilterCriterion = Literal["l1", "mean_activation", "apoz", "random"]
ThresholdStat = Literal["mean_abs", "std"]
Merge = Literal["none", "outgoing"]
Optimizer = Literal["adam", "sgd"]
Activation = Literal["sigmoid", "tanh", "relu"]
PretrainStop = Literal["plateau", "fixed"]

# Per-dataset defaults for settings the paper leaves open (SPEC §3, §8). Chosen by
# measurement to reach the SPEC §8 accuracy bars; every one is recorded in each result row.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "waveform": {
        "model": "ffn", "hidden": 50, "attributes": 40,
        "epochs_pretrain": 100, "epochs_finetune": 30, "lr": 3e-4, "patience": 5,
        "min_delta": 0.005, "batch_size": 32, "weight_decay": 0.0,
    },
    "catsdogs": {
        "model": "cnn", "hidden": 128,
        "epochs_pretrain": 40, "epochs_finetune": 15, "lr": 1e-3, "patience": 5,
        "min_delta": 0.01, "batch_size": 32, "weight_decay": 5e-4,
    },
}


@dataclass(frozen=True)
class TrialConfig:
    # data
    dataset: Dataset = "waveform"
    data: str | None = None  # UCI file / image folder; None = generate (waveform only)
    attributes: int | None = None  # 21 or 40; None for images
    n: int = 5000  # generated Waveform instances
    test_frac: float = 0.2
    val_frac: float = 0.1  # validation slice out of the training part, for early stopping
    data_seed: int = 0  # fixes the dataset and its split, like a published data file
    train_per_class: int = 1000
    test_per_class: int = 200
    image_size: int = 32
    # model
    model: ModelName | None = None
    hidden: int | None = None
    activation: Activation = "sigmoid"
    conv_channels: tuple[int, ...] = (16, 32)
    # pruning
    pruner: PrunerName = "none"
    angle_cutoff: float = 15.0
    merge: Merge = "none"
    remove_constant: bool = False
    distinct_max_patterns: int = 5000
    threshold_factor: float = 1.0
    threshold_stat: ThresholdStat = "mean_abs"
    threshold_layers: str | tuple[str, ...] = "hidden"
    filter_criterion: FilterCriterion = "l1"
    filters_pruned: int | tuple[int, ...] | None = None
    filters_frac: float | None = None
    match: str | None = None  # the pruner a `random` control mirrors
    cycles: int = 1
    max_acc_drop: float | None = None
    # training
    seed: int = 0
    epochs_pretrain: int | None = None
    pretrain_stop: PretrainStop = "plateau"
    patience: int | None = None
    min_delta: float | None = None
    epochs_finetune: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: Optimizer = "adam"
    momentum: float = 0.9  # sgd only
    weight_decay: float | None = None
    device: str = "auto"  # auto = cuda when available, else cpu
    # IEEE fp32 and deterministic kernels on CUDA (no TF32, cudnn.deterministic,
    # torch.use_deterministic_algorithms): bit-identical reruns on one GPU model and software
    # stack, at a cost in speed. No effect on the CPU, which is exact and deterministic anyway.
    exact: bool = False

    # ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrialConfig:
        """Build and validate; unknown keys and wrong types raise ConfigError naming the key."""
        raw = dict(raw)
        match = raw.get("match")
        if isinstance(match, dict):  # SPEC §4.4 form: match: {pruner: threshold, threshold_factor: 1.0}
            mirrored = dict(match)
            raw["match"] = mirrored.pop("pruner", None)
            for key, value in mirrored.items():
                if key in raw and raw[key] != value:
                    raise ConfigError(f"match.{key}: {value!r} conflicts with {key}: {raw[key]!r}")
                raw[key] = value
        unknown = sorted(set(raw) - _HINTS.keys())
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting (known: {', '.join(sorted(_HINTS))})")
        values = {**_FIELD_DEFAULTS, **{key: _coerce(key, value) for key, value in raw.items()}}
        # Dataset defaults fill what is left open, then the one instance is built and validated.
        dataset = _check_choice("dataset", values["dataset"], Dataset)
        for key, default in DATASET_DEFAULTS[dataset].items():
            if values[key] is None:
                values[key] = default
        if dataset == "catsdogs":
            values["attributes"] = None
        if values["pruner"] == "filters" and values["filters_pruned"] is None and values["filters_frac"] is None:
            raise ConfigError("filters_pruned: pruner 'filters' needs filters_pruned or filters_frac")
        cfg = cls(**values)
        cfg._validate()
        return cfg

    def replace(self, **changes: Any) -> TrialConfig:
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        # Every value is a scalar or a tuple of scalars, so no deep copy (dataclasses.asdict) is needed.
        return {key: _plain(getattr(self, key)) for key in _HINTS}

    # ----------------------------------------------------------------------------
    @property
    def prunes_filters(self) -> bool:
        return self.filters_pruned is not None or self.filters_frac is not None

    @property
    def linear_pruner(self) -> str:
        """The unit/connection pruner for the hidden linear layer ('filters' prunes none there)."""
        return "none" if self.pruner == "filters" else self.pruner

    @property
    def mirrored_pruner(self) -> str:
        """The pruner whose settings describe this trial: itself, or what a random control mirrors."""
        return self.match if self.pruner == "random" and self.match else self.pruner

    @property
    def shadows_its_method(self) -> bool:
        """A random control whose method's later steps depend on the method's own trajectory
        (SPEC §4.4): the pipeline runs that trajectory beside it. Filter counts are fixed."""
        return self.pruner == "random" and self.match in ("distinctiveness", "threshold") and self.cycles > 1

    def config_hash(self) -> str:
        return _digest(self.to_dict())

    def pretrain_key(self) -> str:
        """Identifies the pretrained model: data, model, seed and pretraining settings only."""
        keys = PRETRAIN_SETTINGS if self.model == "cnn" else _PRETRAIN_KEYS_FFN
        return _digest({key: _plain(getattr(self, key)) for key in keys})

    # ----------------------------------------------------------------------------
    def _validate(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ConfigError(f"{name}: must be one of {', '.join(map(str, choices))}, got {_show(value)}")
        model_for = {"waveform": "ffn", "catsdogs": "cnn"}[self.dataset]
        if self.model != model_for:
            raise ConfigError(f"model: dataset {self.dataset} uses model {model_for}, got {self.model!r}")
        if self.dataset == "catsdogs" and not self.data:
            raise ConfigError("data: catsdogs needs the folder of your Dogs vs. Cats photos (--data DIR)")
        if self.dataset == "waveform" and self.attributes not in (21, 40):
            raise ConfigError(f"attributes: must be 21 or 40, got {_show(self.attributes)}")
        if self.val_frac == 0:
            raise ConfigError("val_frac: must be above 0: plateau stopping, max_acc_drop and every selection "
                              "read validation accuracy (the test set is never consulted)")
        for name, low, high, open_low, open_high in _RANGES:
            value = getattr(self, name)
            # Written so that NaN fails too (every comparison with NaN is false); runs for every
            # configuration of a sweep, hence inline rather than a call per setting.
            if value is None or ((low < value) if open_low else (low <= value)) and \
                    ((value < high) if open_high else (value <= high)):
                continue
            _range_error(name, value, low, high, open_low, open_high)
        if self.model == "ffn" and self.prunes_filters:
            raise ConfigError("filters_pruned: the FFN has no conv filters; filter pruning needs the CNN")
        if self.filters_pruned is not None and self.filters_frac is not None:
            raise ConfigError("filters_frac: give filters_pruned or filters_frac, not both")
        if self.model == "cnn":
            if len(self.conv_channels) != 2 or not all(1 <= w <= _MAX_WIDTH for w in self.conv_channels):
                raise ConfigError(f"conv_channels: must be two widths in [1, {_MAX_WIDTH}], "
                                  f"got {_show(list(self.conv_channels))}")
            counts = self.filter_counts()
            for layer, (count, width) in enumerate(zip(counts, self.conv_channels)):
                if not 0 <= count < width:
                    raise ConfigError(
                        f"filters_pruned: conv{layer + 1} has {width} filters; "
                        f"pruning {_show(count)} must leave at least one (0..{width - 1})"
                    )
        if self.pruner == "random":
            if self.match not in ("distinctiveness", "threshold", "filters"):
                raise ConfigError(
                    f"match: a random control must name the pruner it mirrors "
                    f"(distinctiveness, threshold or filters), got {self.match!r}"
                )
            if self.match == "filters" and not self.prunes_filters:
                raise ConfigError("filters_pruned: random matching 'filters' needs filters_pruned or filters_frac")
        elif self.pruner == "none" and self.prunes_filters:
            raise ConfigError("filters_pruned: the none control prunes nothing; use pruner 'filters' "
                              "for filter ranking alone")
        elif self.match is not None:
            raise ConfigError(f"match: only a random control mirrors another pruner, not {self.pruner!r}")
        if isinstance(self.threshold_layers, tuple) and not self.threshold_layers:
            raise ConfigError("threshold_layers: give 'hidden', 'all_linear' or a list of layer names")

    def filter_counts(self) -> tuple[int, ...]:
        """Filters to remove per conv layer in one cycle."""
        widths = self.conv_channels
        if self.filters_frac is not None:
            return tuple(int(round(self.filters_frac * w)) for w in widths)
        if self.filters_pruned is None:
            return tuple(0 for _ in widths)
        if isinstance(self.filters_pruned, int):
            return tuple(self.filters_pruned for _ in widths)
        if len(self.filters_pruned) != len(widths):
            raise ConfigError(
                f"filters_pruned: give one count or one per conv layer ({len(widths)}), "
                f"got {list(self.filters_pruned)}"
            )
        return tuple(self.filters_pruned)


def _plain(value: Any) -> Any:
    """A setting as JSON and YAML write it: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


def _digest(obj: Any) -> str:
    return hashlib.sha256(_JSON.encode(obj).encode()).hexdigest()[:16]


_JSON = json.JSONEncoder(sort_keys=True)  # what json.dumps(sort_keys=True) builds on every call


def _literal_choices(hint: Any) -> tuple[Any, ...]:
    for arg in (hint, *get_args(hint)):
        if getattr(arg, "__origin__", None) is Literal:
            return get_args(arg)
    return ()


def _check_choice(name: str, value: Any, literal: Any) -> Any:
    if value not in get_args(literal):
        raise ConfigError(f"{name}: must be one of {', '.join(get_args(literal))}, got {value!r}")
    return value


def _range_error(name: str, value: float, low: float, high: float, open_low: bool, open_high: bool) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
    raise ConfigError(f"{name}: must be in {lo}{low}, {high}{hi}, got {_show(value)}")


def _show(value: Any) -> str:
    """A value for a one-line message: a mistyped 400-digit number is shown by its start."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _coerce(key: str, value: Any) -> Any:
    """Accept what YAML and the command line produce; reject anything else by name."""
    if value is None:
        if _NULLABLE[key]:
            return None
        raise ConfigError(f"{key}: must not be empty")
    for option in _OPTIONS[key]:
        converted = _try_convert(value, option)
        if converted is not _FAIL:
            return converted
    raise ConfigError(f"{key}: expected {_describe(_HINTS[key])}, got {_show(value)}")


_FAIL = object()


def _try_convert(value: Any, option: Any) -> Any:
    origin = getattr(option, "__origin__", None)
    if origin is Literal:
        return value if value in get_args(option) else _FAIL
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _FAIL
        (item_type, _) = get_args(option)
        items = [_try_convert(v, item_type) for v in value]
        return _FAIL if any(i is _FAIL for i in items) else tuple(items)
    if option is bool:
        return value if isinstance(value, bool) else _FAIL
    if option is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _FAIL
    if option is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond any float: the range check refuses it as infinite
                return math.inf if value > 0 else -math.inf
        return _FAIL
    if option is str:
        return value if isinstance(value, str) else _FAIL
    return _FAIL


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or getattr(hint, "__origin__", None) is Union


def _describe(hint: Any) -> str:
    if getattr(hint, "__origin__", None) is Literal:
        return " | ".join(map(str, get_args(hint)))
    if getattr(hint, "__origin__", None) is tuple:
        return f"a list of {_describe(get_args(hint)[0])}"
    if _is_union(hint):
        return " or ".join(_describe(a) for a in get_args(hint) if a is not type(None))
    return hint.__name__


# Resolved once: get_type_hints evaluates every annotation string, and a 10^5-configuration
# sweep validates 10^5 configurations before it starts.
_HINTS: dict[str, Any] = get_type_hints(TrialConfig)
_CHOICES: dict[str, tuple[Any, ...]] = {name: c for name, hint in _HINTS.items() if (c := _literal_choices(hint))}
_NULLABLE: dict[str, bool] = {name: type(None) in get_args(hint) for name, hint in _HINTS.items()}
_OPTIONS: dict[str, list[Any]] = {
    name: [a for a in get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    for name, hint in _HINTS.items()
}
# What identifies a pretrained model (pretrain_key): data, model, seed and pretraining settings.
PRETRAIN_SETTINGS = (
    "dataset", "data", "attributes", "n", "test_frac", "val_frac", "data_seed",
    "train_per_class", "test_per_class", "image_size", "model", "hidden", "activation",
    "conv_channels", "seed", "epochs_pretrain", "pretrain_stop", "patience", "min_delta",
    "batch_size", "lr", "optimizer", "momentum", "weight_decay", "exact",
)
_PRETRAIN_KEYS_FFN = tuple(key for key in PRETRAIN_SETTINGS if key != "conv_channels")  # FFN has no convs
_FIELD_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrialConfig)}

# Integer settings and their sane ranges: a value beyond what any machine runs would only fail
# later, deep in numpy or torch, as a failed row rather than a one-line error. Seeds stay within
# what every generator accepts (numpy's legacy seeding takes 32 bits).
_MAX_SEED = 2**32 - 1
_MAX_WIDTH = 10**5  # hidden units or conv filters
_INT_RANGES: dict[str, tuple[int, int]] = {
    "seed": (0, _MAX_SEED), "data_seed": (0, _MAX_SEED),
    "n": (1, 10**7), "train_per_class": (1, 10**7), "test_per_class": (1, 10**7),
    "distinct_max_patterns": (1, 10**7), "image_size": (1, 1024), "hidden": (1, _MAX_WIDTH),
    "cycles": (1, 1000), "epochs_pretrain": (1, 10**5), "epochs_finetune": (0, 10**5),
    "patience": (1, 10**5), "batch_size": (1, 10**6),
}
# Every numeric setting's range: (name, low, high, open_low, open_high). An unbounded float is
# open at inf, so an infinity is refused like NaN.
_RANGES: tuple[tuple[str, float, float, bool, bool], ...] = (
    ("angle_cutoff", 0, 90, True, True), ("threshold_factor", 0, math.inf, True, True),
    ("test_frac", 0, 1, True, True), ("val_frac", 0, 1, True, True), ("lr", 0, math.inf, True, True),
    ("momentum", 0, 1, False, True), ("weight_decay", 0, math.inf, False, True),
    ("min_delta", 0, math.inf, False, True), ("max_acc_drop", 0, 1, False, False),
    ("filters_frac", 0, 1, False, True),
    *((name, low, high, False, False) for name, (low, high) in _INT_RANGES.items()),
)
