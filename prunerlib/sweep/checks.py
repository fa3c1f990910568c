"""The checks every part of a sweep spec shares: one `SpecError` naming the key path of the
problem (`grid[1].angle_cutoff[2]`), values checked by kind, and trial settings turned into a
`TrialConfig` whose own errors are reported at the key path that set them."""

from __future__ import annotations

from typing import Any

from prunerlib.config import TrialConfig, setting_hints, unknown_setting
from prunerlib.values import show
from prunerlib.errors import ConfigError

PER_SEED = "per_seed"  # fixed.data_seed: every trial's data split is drawn from its own seed


class SpecError(ConfigError):
    """The spec cannot run; the message starts with the key path of the problem."""


def seeded(fixed: dict[str, Any], seed: int) -> dict[str, Any]:
    """A trial's settings at `seed`; with data_seed: per_seed the data split follows the seed."""
    return {**fixed, "seed": seed, **({"data_seed": seed} if fixed.get("data_seed") == PER_SEED else {})}


def config_at(settings: dict[str, Any], paths: dict[str, str], where: str) -> TrialConfig:
    """Build one trial's config; a setting it rejects is reported at the key path that set it."""
    try:
        return TrialConfig.from_dict(settings)
    except ConfigError as exc:
        key, _, problem = str(exc).partition(": ")
        if key in paths:
            raise SpecError(f"{paths[key]}: {problem}") from None
        if key in settings:  # set under fixed
            raise SpecError(f"fixed.{key}: {problem}") from None
        if key == "data":  # set nowhere: a sweep is given its data as a fixed setting, not as run's flag
            raise SpecError(f"fixed.data: {problem.replace('(--data DIR)', '(--set data=DIR)')}") from None
        raise SpecError(f"{where}: {exc}") from None


def setting_name(key: Any, path: str) -> None:
    if key not in setting_hints():
        hint = unknown_setting(key).partition(": unknown setting ")[2]
        raise SpecError(f"{path}: unknown trial setting {hint}")


def mapping(raw: Any, path: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: must be a mapping, got {kind(raw)}")
    return raw


def number(raw: Any, path: str, low: float | None = None, open_low: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise SpecError(f"{path}: must be a number, got {kind(raw)}")
    if not (-1e300 < raw < 1e300):  # NaN and the infinities fail every range check below; huge ints overflow
        raise SpecError(f"{path}: must be a finite number, got {show(raw)}")
    if low is not None and (raw <= low if open_low else raw < low):
        raise SpecError(f"{path}: must be {'above' if open_low else 'at least'} {low}, got {raw}")
    return float(raw)


def integer(raw: Any, path: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"{path}: must be an integer, got {kind(raw)}")
    if low is not None and raw < low:
        raise SpecError(f"{path}: must be at least {low}, got {show(raw)}")
    if high is not None and raw > high:
        raise SpecError(f"{path}: must be at most {high}, got {show(raw)}")
    return raw


def kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]
