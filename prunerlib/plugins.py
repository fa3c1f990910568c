"""A user's pruners, from Python files outside the package.

`prunerlib run --plugin my_pruner.py` and a sweep spec's `plugins: [my_pruner.py]` import the
file, whose `@register`-ed `Pruner` subclass then works like a built-in one (its settings,
flags, columns and labels come from its class). A sweep imports its plugins in the driver and
in every Ray worker before the worker runs a pack, so the file must be readable at the same
path on every node (shared storage, like the sweep folder).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from prunerlib import registry
from prunerlib.errors import ConfigError

_LOADED: dict[Path, ModuleType] = {}  # each file is executed once per process


def load(paths: Iterable[str | Path], key: str = "plugin") -> list[str]:
    """Import each file once; return the names of the pruners they registered. A missing
    file, one that fails to import, or one that registers no pruner is a ConfigError naming it."""
    names: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path in _LOADED:
            names += [n for n, cls in registry.PRUNERS.items() if cls.__module__ == _LOADED[path].__name__]
            continue
        if not path.is_file():
            raise ConfigError(f"{key}: {raw} is not a file (give the path of a Python file that registers a pruner)")
        before = dict(registry.PRUNERS)
        module = _import(path, key)
        added = [name for name, cls in registry.PRUNERS.items() if before.get(name) is not cls]
        if not added:
            raise ConfigError(f"{key}: {raw} registers no pruner (decorate a prunerlib.pruners.Pruner subclass "
                              f"with @register)")
        _LOADED[path] = module
        names += added
    return names


def _import(path: Path, key: str) -> ModuleType:
    # A name unique to the file: two plugins both called pruner.py must not replace each other.
    name = f"prunerlib_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{key}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickles of its classes resolve, as for any imported module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001  whatever the user's file raises, said in one line
        del sys.modules[name]
        problem = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{key}: {path} failed to import: {type(exc).__name__}: {problem}") from None
    return module


def loaded() -> tuple[str, ...]:
    """The plugin files this process has imported, as absolute paths."""
    return tuple(str(path) for path in _LOADED)
