"""Every pruner by name, and the settings each one owns.

The one place the rest of prunerlib learns what pruners exist: `TrialConfig` (its settings,
their types, ranges and defaults), the command line (a flag per setting), sweep specs (which
settings a sub-grid may vary), the result columns, the plan's and the summary's labels and the
report all read this registry. A pruner adds itself with `prunerlib.pruners.register` (see
`prunerlib.pruners.base.Pruner` for a complete example); a user's pruner in a file of its own
is loaded with `prunerlib.plugins.load`.

No torch here: `config` builds on this module, and `pruners` (which needs torch) on both.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

# What a pruner reports as its removed share: columns every result row has (metrics.py).
REMOVED_COLUMNS = ("units_removed_frac", "weights_removed_frac", "filters_removed_frac")


@dataclass(frozen=True)
class Setting:
    """One setting a pruner owns: a `TrialConfig` key, a command-line flag
    (`--angle-cutoff`), a sweep-spec key and a result column of the same name.

    `kind` is a type hint (`float`, `int`, `bool`, `str`, `Literal[...]`, `int | None`,
    `int | tuple[int, ...] | None`); values are checked against it, and numbers against
    [`low`, `high`] (open at an end when `open_low` / `open_high`). `label` is the short name
    the plan, the summary and the report show the setting under (None: not shown)."""

    name: str
    kind: Any
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    label: str | None = None


PRUNERS: dict[str, type] = {}  # name -> pruner class, in registration order
_OWNER: dict[str, str] = {}  # setting name -> the pruner that owns it
_SETTINGS: dict[str, Setting] = {}
_BUILTIN: set[str] = set()  # settings of pruners that ship with prunerlib
_RESERVED: set[str] = set()  # TrialConfig's own fields: no pruner may own one (set by config)


def add(cls: type) -> type:
    """Register a pruner class (what `prunerlib.pruners.register` does after its checks).
    Refuses a name or a setting that is taken: two pruners cannot both own `units_frac`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__qualname__}.name: a pruner needs a name that is an identifier, got {name!r}")
    if name in PRUNERS and PRUNERS[name] is not cls:
        previous = PRUNERS[name]
        if (previous.__module__, previous.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"{cls.__qualname__}.name: pruner {name!r} is already registered by "
                             f"{previous.__module__}.{previous.__qualname__}")
    if getattr(cls, "removes", None) not in (*REMOVED_COLUMNS, None):
        raise ValueError(f"{cls.__qualname__}.removes: must be one of {', '.join(REMOVED_COLUMNS)} (or None), "
                         f"got {cls.removes!r}")
    for setting in cls.settings:
        owner = _OWNER.get(setting.name)
        if setting.name in _RESERVED or (owner is not None and owner != name):
            taken = "a TrialConfig field" if setting.name in _RESERVED else f"owned by pruner {owner!r}"
            raise ValueError(f"{cls.__qualname__}.settings: {setting.name!r} is {taken}; give yours another name")
    PRUNERS[name] = cls
    for setting in cls.settings:
        _OWNER[setting.name] = name
        _SETTINGS[setting.name] = setting
        if cls.__module__.startswith("prunerlib."):
            _BUILTIN.add(setting.name)
    return cls


def pruner(name: str, key: str = "pruner") -> type:
    """The class registered as `name`; a ConfigError-worthy message (raised by the caller's
    type) names `key` and suggests the closest names."""
    try:
        return PRUNERS[name]
    except KeyError:
        raise KeyError(unknown(key, name, PRUNERS, "pruner")) from None


def settings() -> dict[str, Setting]:
    """Every pruner setting, by name, in registration order."""
    return dict(_SETTINGS)


def setting_owner(name: str) -> str | None:
    """The pruner that owns setting `name` (None for TrialConfig's own fields)."""
    return _OWNER.get(name)


def is_builtin(name: str) -> bool:
    """Whether setting `name` belongs to a pruner that ships with prunerlib."""
    return name in _BUILTIN


def labelled_settings() -> tuple[str, ...]:
    """Settings shown under a short label: what tells one pruner setting from another."""
    return tuple(name for name, s in _SETTINGS.items() if s.label)


def order() -> tuple[str, ...]:
    """Pruners in display order: the methods as registered, then the controls."""
    methods = [name for name, cls in PRUNERS.items() if not cls.control]
    controls = [name for name, cls in PRUNERS.items() if cls.control]
    return (*methods, *sorted(controls, key=lambda n: n != "random"))


def companions() -> tuple[type, ...]:
    """Pruners whose settings may be given beside another pruner's, adding their step."""
    return tuple(cls for cls in PRUNERS.values() if cls.companion)


def unknown(key: str, value: Any, known: Any, what: str) -> str:
    """'KEY: unknown WHAT 'VALUE' (did you mean ...?)' for a one-line error."""
    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(map(str, known))}"
    if what == "pruner" and not close:
        hint += "; a pruner of your own is loaded with --plugin PATH.py, or a sweep spec's plugins: [PATH.py]"
    return f"{key}: unknown {what} {value!r} ({hint})"
