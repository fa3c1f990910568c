"""One trial's settings: defaults, validation, hashing, and the role each setting plays.

A `TrialConfig` is the fixed contract of an experiment (params in); `pipeline.run_trial`
turns it into result rows (metrics out). Everything that changes a result lives here, so
the config hash identifies the result and the pretrain key identifies the pretrained model.

Two kinds of settings: TrialConfig's own fields (data, model, training, the cycle schedule),
each tagged with its role below, and the settings the registered pruners own
(`prunerlib.registry`: `angle_cutoff`, `threshold_factor`, a plugin's `units_frac`, ...),
read the same way (`cfg.angle_cutoff`). Every setting is a result column of the same name.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from prunerlib import registry
from prunerlib.errors import ConfigError
from prunerlib.values import check_choice, coerce, literal_choices, range_error, show

Dataset = Literal["waveform", "catsdogs"]
ModelName = Literal["ffn", "cnn"]
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

# What each role means for a setting: whether it identifies the pretrained model (pretrain_key),
# whether every member of a population must share it (they train in lock-step on one copy of
# the data), and whether it is a result column (every setting that can change a result is).
_ROLE_RULES: dict[str, tuple[bool, bool, bool]] = {
    #              pretrain  population  column
    "data":        (True,    True,       True),   # which examples, and how they are split
    "model":       (True,    True,       True),   # the architecture: parameters must stack
    "pretraining": (True,    False,      True),   # the pretraining stage alone (and the model seed)
    "optimiser":   (True,    False,      True),   # both stages, per member
    "stage":       (True,    True,       True),   # both stages, and the shape of a lock-step
    "finetuning":  (False,   True,       True),   # the fine-tuning stage's shape
    "pruning":     (False,   False,      True),   # what is removed, when, and how often
    "placement":   (False,   True,       False),  # where it runs: the row's `device` says what ran
}


def _setting(default: Any, role: str, help: str, *, applies: Any = None, only: str | None = None) -> Any:
    """A TrialConfig field: `role` from _ROLE_RULES; `applies(cfg)` False makes its column null
    (a setting that does not apply to the trial, SPEC §6); `only` names the one model that has it."""
    return field(default=default, metadata={"role": role, "help": help, "applies": applies, "only": only})


def _waveform(cfg: TrialConfig) -> bool:
    return cfg.dataset == "waveform"


def _images(cfg: TrialConfig) -> bool:
    return cfg.dataset == "catsdogs"


@dataclass(frozen=True)
class TrialConfig:
    # data
    dataset: Dataset = _setting("waveform", "data", "waveform | catsdogs")
    data: str | None = _setting(None, "data", "UCI waveform file, or a Dogs vs. Cats folder (default: generate "
                                              "Waveform data)")
    attributes: int | None = _setting(None, "data", "Waveform attributes: 21 or 40 (none for images)")
    n: int = _setting(5000, "data", "generated Waveform instances", applies=_waveform)
    test_frac: float = _setting(0.2, "data", "Waveform: share of the instances held out for testing",
                                applies=_waveform)
    val_frac: float = _setting(0.1, "data", "share of the training part held out for validation (early stopping, "
                                            "max_acc_drop, every selection)")
    data_seed: int = _setting(0, "data", "dataset seed: generation, split and subset (like a published data file)")
    train_per_class: int = _setting(1000, "data", "images: training photos per class", applies=_images)
    test_per_class: int = _setting(200, "data", "images: test photos per class", applies=_images)
    image_size: int = _setting(32, "data", "images: side in pixels the photos are resized to", applies=_images)
    # model
    model: ModelName | None = _setting(None, "model", "ffn | cnn (default: the dataset's)")
    hidden: int | None = _setting(None, "model", "hidden units")
    activation: Activation = _setting("sigmoid", "model", "hidden activation: sigmoid | tanh | relu")
    conv_channels: tuple[int, ...] = _setting((16, 32), "model", "CNN: filters of the two conv layers",
                                              only="cnn")
    # pruning
    pruner: str = _setting("none", "pruning", "the pruner (see `prunerlib run --help` for every one)")
    match: str | None = _setting(None, "pruning", "for pruner random: the pruner it mirrors")
    distinct_max_patterns: int = _setting(5000, "pruning", "training patterns activation-based criteria look at "
                                                           "(distinctiveness, mean_activation, apoz)")
    cycles: int = _setting(1, "pruning", "prune / fine-tune cycles")
    max_acc_drop: float | None = _setting(None, "pruning", "stop cycling when validation accuracy falls this far "
                                                           "below pretrained")
    # training
    seed: int = _setting(0, "pretraining", "model seed: initialisation, data order, random choices")
    epochs_pretrain: int | None = _setting(None, "pretraining", "most pretraining epochs")
    pretrain_stop: PretrainStop = _setting("plateau", "pretraining", "plateau (early stopping on validation) | fixed")
    patience: int | None = _setting(None, "pretraining", "plateau: epochs without improvement before stopping",
                                    applies=lambda cfg: cfg.pretrain_stop == "plateau")
    min_delta: float | None = _setting(None, "pretraining", "plateau: smallest validation gain that counts",
                                       applies=lambda cfg: cfg.pretrain_stop == "plateau")
    epochs_finetune: int | None = _setting(None, "finetuning", "fine-tuning epochs per cycle")
    batch_size: int | None = _setting(None, "stage", "mini-batch size")
    lr: float | None = _setting(None, "optimiser", "learning rate")
    optimizer: Optimizer = _setting("adam", "stage", "adam | sgd")
    momentum: float = _setting(0.9, "optimiser", "sgd: momentum", applies=lambda cfg: cfg.optimizer == "sgd")
    weight_decay: float | None = _setting(None, "optimiser", "L2 weight decay")
    device: str = _setting("auto", "placement", "auto | cpu | cuda | cuda:N (auto: cuda when available, else cpu)")
    # IEEE fp32 and deterministic kernels on CUDA (no TF32, cudnn.deterministic,
    # torch.use_deterministic_algorithms): bit-identical reruns on one GPU model and software
    # stack, at a cost in speed. No effect on the CPU, which is exact and deterministic anyway.
    exact: bool = _setting(False, "stage", "CUDA: IEEE fp32 and deterministic kernels (bit-identical reruns)")
    # The registered pruners' settings, (name, value) in registration order: every one, at its
    # default where not set, so that a configuration compares and hashes by all of them.
    pruner_settings: tuple[tuple[str, Any], ...] = field(default=(), repr=False, compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_method", dict(self.pruner_settings))

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not fields: a pruner's setting, read like a field.
        if not name.startswith("_"):
            method = self.__dict__.get("_method")
            if method is not None and name in method:
                return method[name]
        raise AttributeError(f"TrialConfig has no setting {name!r}")

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
        raw.pop("pruner_settings", None)  # to_dict never writes it; a stray one is not a setting
        known = _known()
        hints = known.hints
        for key in raw:
            if key not in hints:
                raise ConfigError(unknown_setting(key))
        values = {**known.defaults, **{key: coerce(key, value, hints[key]) for key, value in raw.items()}}
        # Dataset defaults fill what is left open, then the one instance is built and validated.
        dataset = check_choice("dataset", values["dataset"], Dataset)
        for key, default in DATASET_DEFAULTS[dataset].items():
            if values[key] is None:
                values[key] = default
        if dataset == "catsdogs":
            values["attributes"] = None
        method = tuple((name, values.pop(name)) for name in known.method)
        cfg = cls(**values, pruner_settings=method)
        cfg._validate()
        return cfg

    def replace(self, **changes: Any) -> TrialConfig:
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (the pruners' too); tuples as lists, as JSON and YAML write them.
        A plugin's setting at its default is left out: a process that never loaded that plugin
        (a Ray worker of a sweep that does not use it) reads the dict all the same, and loading
        a plugin changes no other configuration's identity (`config_hash`)."""
        # Every value is a scalar or a tuple of scalars, so no deep copy (dataclasses.asdict) is needed.
        own = {name: _plain(getattr(self, name)) for name in _OWN}
        defaults = _known().defaults
        return own | {name: _plain(value) for name, value in self.pruner_settings
                      if registry.is_builtin(name) or value != defaults[name]}

    # ----------------------------------------------------------------------------
    @property
    def pruner_class(self) -> type:
        return registry.PRUNERS[self.pruner]

    @property
    def mirrored_pruner(self) -> str:
        """The pruner whose settings describe this trial: itself, or what a random control mirrors."""
        return self.match if self.pruner == "random" and self.match else self.pruner

    @property
    def shadows_its_method(self) -> bool:
        """A random control whose method's later steps depend on the method's own trajectory
        (SPEC §4.4): the pipeline runs that trajectory beside it. Fixed filter counts are not; auto's are."""
        return (self.pruner == "random" and self.match is not None and self.cycles > 1
                and any(p.follows(self) for p in (registry.PRUNERS[self.match], *self.active_companions())))

    def active_companions(self) -> tuple[type, ...]:
        """Companion pruners (filter ranking) whose settings this trial sets: each adds its step."""
        return tuple(c for c in registry.companions() if c.name != self.pruner and c.active(self))

    def config_hash(self) -> str:
        """Identifies the result: every setting (as `to_dict` writes them)."""
        return _digest(self.to_dict())

    def pretrain_key(self) -> str:
        """Identifies the pretrained model: the settings whose role is part of pretraining."""
        return _digest({key: _plain(getattr(self, key)) for key in PRETRAIN_SETTINGS
                        if _ONLY[key] in (None, self.model)})

    def columns(self) -> dict[str, Any]:
        """The configuration as result columns (SPEC §6): every setting that can change a result,
        null where it does not apply to this trial; tuples written as 'a,b'."""
        row = {name: column_value(getattr(self, name)) if self._applies(name) else None for name in _COLUMN_FIELDS}
        for name in _known().method:
            row[name] = None
        for cls in (registry.PRUNERS[self.mirrored_pruner], *self.active_companions()):
            row |= cls.columns(self)
        return row

    def _applies(self, name: str) -> bool:
        """Whether own setting `name` applies to this trial: its model has it, and its rule holds."""
        return _ONLY[name] in (None, self.model) and (_APPLIES[name] is None or _APPLIES[name](self))

    # ----------------------------------------------------------------------------
    def _validate(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ConfigError(f"{name}: must be one of {', '.join(map(str, choices))}, got {show(value)}")
        if self.pruner not in registry.PRUNERS:
            raise ConfigError(registry.unknown("pruner", self.pruner, registry.PRUNERS, "pruner"))
        model_for = {"waveform": "ffn", "catsdogs": "cnn"}[self.dataset]
        if self.model != model_for:
            raise ConfigError(f"model: dataset {self.dataset} uses model {model_for}, got {self.model!r}")
        if self.dataset == "catsdogs" and not self.data:
            raise ConfigError("data: catsdogs needs the folder of your Dogs vs. Cats photos (--data DIR)")
        if self.dataset == "waveform" and self.attributes not in (21, 40):
            raise ConfigError(f"attributes: must be 21 or 40, got {show(self.attributes)}")
        if self.val_frac == 0:
            raise ConfigError("val_frac: must be above 0: plateau stopping, max_acc_drop and every selection "
                              "read validation accuracy (the test set is never consulted)")
        values = self.__dict__ | self.__dict__["_method"]  # a pruner's setting, without __getattr__'s detour
        for name, low, high, open_low, open_high in _known().ranges:
            value = values[name]
            # Written so that NaN fails too (every comparison with NaN is false); runs for every
            # configuration of a sweep, hence inline rather than a call per setting.
            if value is None or ((low < value) if open_low else (low <= value)) and \
                    ((value < high) if open_high else (value <= high)):
                continue
            range_error(name, value, low, high, open_low, open_high)
        if self.model == "cnn" and (len(self.conv_channels) != 2
                                    or not all(1 <= w <= _MAX_WIDTH for w in self.conv_channels)):
            raise ConfigError(f"conv_channels: must be two widths in [1, {_MAX_WIDTH}], "
                              f"got {show(list(self.conv_channels))}")
        if self.match is not None and self.pruner != "random":
            raise ConfigError(f"match: only a random control mirrors another pruner, not {self.pruner!r}")
        pruner = self.pruner_class
        pruner.check(self)
        if self.model not in pruner.models:
            raise ConfigError(f"pruner: {self.pruner} prunes the {' or '.join(m.upper() for m in pruner.models)} only, "
                              f"not the {self.model.upper()} of dataset {self.dataset}")
        for companion in self.active_companions():
            companion.check(self)


def _plain(value: Any) -> Any:
    """A setting as JSON and YAML write it: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


def column_value(value: Any) -> Any:
    """A setting as a result column: a list-valued one written 'a,b'."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def _digest(obj: Any) -> str:
    return hashlib.sha256(_JSON.encode(obj).encode()).hexdigest()[:16]


_JSON = json.JSONEncoder(sort_keys=True)  # what json.dumps(sort_keys=True) builds on every call


def unknown_setting(key: Any) -> str:
    """One line for a setting no one owns, with the closest names (difflib)."""
    close = difflib.get_close_matches(str(key), list(setting_hints()), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "`prunerlib run --help` lists every setting"
    return f"{key}: unknown setting ({hint})"


def setting_hints() -> dict[str, Any]:
    """Every setting's type hint: TrialConfig's own fields, then the registered pruners'."""
    return dict(_known().hints)


def setting_defaults() -> dict[str, Any]:
    return dict(_known().defaults)


@dataclass(frozen=True)
class _Known:
    """What TrialConfig needs of the registry, built once per set of registered settings: a
    sweep validates up to 10^5 configurations before it starts."""

    hints: dict[str, Any]
    defaults: dict[str, Any]
    method: tuple[str, ...]  # the pruners' settings, in registration order
    ranges: tuple[tuple[str, float, float, bool, bool], ...]


_KNOWN: dict[tuple[int, ...], _Known] = {}


def _known() -> _Known:
    settings = registry._SETTINGS
    key = tuple(map(id, settings.values()))  # a plugin loaded since (or set aside by a test) is another key
    known = _KNOWN.get(key)
    if known is None:
        known = _KNOWN[key] = _Known(
            hints=_OWN_HINTS | {name: s.kind for name, s in settings.items()},
            defaults=_OWN_DEFAULTS | {name: s.default for name, s in settings.items()},
            method=tuple(settings), ranges=_ranges())
    return known


def setting_help() -> dict[str, str]:
    return {f.name: f.metadata["help"] for f in _FIELDS} | {n: s.help for n, s in registry.settings().items()}


def column_settings() -> tuple[str, ...]:
    """Every setting that is a result column: TrialConfig's own (roles say which), then the
    registered pruners'."""
    return _COLUMN_FIELDS + tuple(registry.settings())


def columns_with_role(*roles: str) -> tuple[str, ...]:
    """TrialConfig's own settings of the given roles (see _ROLE_RULES), in field order."""
    return tuple(name for name in _OWN if ROLES[name] in roles)


# Resolved once: get_type_hints evaluates every annotation string, and a 10^5-configuration
# sweep validates 10^5 configurations before it starts.
_FIELDS = tuple(f for f in dataclasses.fields(TrialConfig) if f.name != "pruner_settings")
_OWN = tuple(f.name for f in _FIELDS)
_OWN_HINTS: dict[str, Any] = {name: hint for name, hint in get_type_hints(TrialConfig).items() if name in _OWN}
_OWN_DEFAULTS: dict[str, Any] = {f.name: f.default for f in _FIELDS}
_CHOICES: dict[str, tuple[Any, ...]] = {name: c for name, hint in _OWN_HINTS.items() if (c := literal_choices(hint))}
ROLES: dict[str, str] = {f.name: f.metadata["role"] for f in _FIELDS}
_APPLIES = {f.name: f.metadata["applies"] for f in _FIELDS}
_ONLY = {f.name: f.metadata["only"] for f in _FIELDS}
# What identifies a pretrained model (pretrain_key), and what a population's members share.
PRETRAIN_SETTINGS = tuple(name for name in _OWN if _ROLE_RULES[ROLES[name]][0])
POPULATION_SETTINGS = tuple(name for name in _OWN if _ROLE_RULES[ROLES[name]][1])
_COLUMN_FIELDS = tuple(name for name in _OWN if _ROLE_RULES[ROLES[name]][2])
registry._RESERVED.update(_OWN, {"pruner_settings"})

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
# Every numeric setting's range of TrialConfig's own: (name, low, high, open_low, open_high).
# An unbounded float is open at inf, so an infinity is refused like NaN.
_OWN_RANGES: tuple[tuple[str, float, float, bool, bool], ...] = (
    ("test_frac", 0, 1, True, True), ("val_frac", 0, 1, True, True), ("lr", 0, math.inf, True, True),
    ("momentum", 0, 1, False, True), ("weight_decay", 0, math.inf, False, True),
    ("min_delta", 0, math.inf, False, True), ("max_acc_drop", 0, 1, False, False),
    *((name, low, high, False, False) for name, (low, high) in _INT_RANGES.items()),
)


def _ranges() -> tuple[tuple[str, float, float, bool, bool], ...]:
    """TrialConfig's own ranges, then the registered pruners' (a range open at a missing end)."""
    method = tuple((s.name, -math.inf if s.low is None else s.low, math.inf if s.high is None else s.high,
                    s.open_low or s.low is None, s.open_high or s.high is None)
                   for s in registry.settings().values() if s.low is not None or s.high is not None)
    return _OWN_RANGES + method
