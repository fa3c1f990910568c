"""A setting's value against its type hint: what YAML and the command line produce is accepted,
anything else is refused in one line naming the setting. Shared by TrialConfig's own fields and
the pruners' settings (`registry.Setting.kind`)."""

from __future__ import annotations

import functools
import math
import types
from typing import Any, Literal, Union, get_args

from prunerlib.errors import ConfigError


def literal_choices(hint: Any) -> tuple[Any, ...]:
    for arg in (hint, *get_args(hint)):
        if getattr(arg, "__origin__", None) is Literal:
            return get_args(arg)
    return ()


def check_choice(name: str, value: Any, literal: Any) -> Any:
    if value not in get_args(literal):
        raise ConfigError(f"{name}: must be one of {', '.join(get_args(literal))}, got {value!r}")
    return value


def range_error(name: str, value: float, low: float, high: float, open_low: bool, open_high: bool) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
    raise ConfigError(f"{name}: must be in {lo}{low}, {high}{hi}, got {show(value)}")


def show(value: Any) -> str:
    """A value for a one-line message: a mistyped 400-digit number is shown by its start."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Accept what YAML and the command line produce; reject anything else by name."""
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise ConfigError(f"{key}: must not be empty")
    for option in options(hint):
        converted = _try_convert(value, option)
        if converted is not _FAIL:
            return converted
    raise ConfigError(f"{key}: expected {describe_type(hint)}, got {show(value)}")


_FAIL = object()


@functools.cache  # once per type hint: every setting of every configuration of a sweep comes here
def options(hint: Any) -> tuple[Any, ...]:
    """The types a value of `hint` may take, None aside."""
    return tuple(a for a in get_args(hint) if a is not type(None)) if is_union(hint) else (hint,)


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


def is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or getattr(hint, "__origin__", None) is Union


def describe_type(hint: Any) -> str:
    """A type hint in words: 'none | outgoing', 'int or a list of int'."""
    if getattr(hint, "__origin__", None) is Literal:
        return " | ".join(map(str, get_args(hint)))
    if getattr(hint, "__origin__", None) is tuple:
        return f"a list of {describe_type(get_args(hint)[0])}"
    if is_union(hint):
        return " or ".join(describe_type(a) for a in get_args(hint) if a is not type(None))
    return hint.__name__
