"""Breiman's Waveform generator (CART book pp. 49-55; SPEC §1) and the UCI file format.

The generated files match the published UCI ones (two decimals, label last, no header), so a
user with the original `waveform.data` / `waveform-+noise.data` can use those instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from prunerlib.errors import DataError

_POSITIONS = np.arange(21)
# Triangles of height 6 centred at 6 (A), 14 (B) and 10 (C).
_WAVES = {c: np.maximum(0.0, 6.0 - np.abs(_POSITIONS - c)) for c in (6, 14, 10)}
_A, _B, _C = _WAVES[6], _WAVES[14], _WAVES[10]
_CLASS_WAVES = ((_A, _B), (_A, _C), (_B, _C))
# Class c mixes the two base waves of _CLASS_WAVES[c] (UCI's labels 0, 1, 2).
CLASS_NAMES = ("waves A+B", "waves A+C", "waves B+C")
GENERATOR_VERSION = 1  # bump when generate() gives other data for the same settings


def generate(n: int, attributes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` instances: (x float32 of shape (n, attributes), y int64 in {0, 1, 2})."""
    if attributes not in (21, 40):
        raise ValueError(f"attributes must be 21 or 40, got {attributes}")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    u = rng.integers(0, 1001, size=n) / 1000.0  # uniform on {0.000, 0.001, ..., 1.000}
    p = np.stack([_CLASS_WAVES[c][0] for c in y])
    q = np.stack([_CLASS_WAVES[c][1] for c in y])
    x = u[:, None] * p + (1.0 - u[:, None]) * q + rng.standard_normal((n, 21))
    if attributes == 40:
        x = np.hstack([x, rng.standard_normal((n, 19))])
    return x.astype(np.float32), y.astype(np.int64)


def write_uci(path: str | os.PathLike, x: np.ndarray, y: np.ndarray) -> None:
    lines = (",".join(f"{v:.2f}" for v in row) + f",{label}" for row, label in zip(x, y))
    Path(path).write_text("\n".join(lines) + "\n")


# Waveform attributes lie within about -5..10. A magnitude past this bound is a corrupt value, and
# it would overflow float32 once squared in the standardising statistics (NaN scaling, then a
# run that "diverges" for no reason the user can see).
_MAX_ABS = 1e15


def read_uci(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a UCI Waveform file (22 or 41 comma-separated columns, label last)."""
    x, y, _ = read_uci_fingerprinted(path)
    return x, y


def read_uci_fingerprinted(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, str]:
    """`read_uci` plus the sha256 of the bytes parsed: a file rewritten in place is other data.
    Hashing the bytes read once (not the file again) leaves no gap for a rewrite in between."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data: {path} is not a file (expected a UCI waveform .data file)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"data: {path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                        f"expected comma-separated numbers") from None
    rows: list[list[float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            raise DataError(f"data: {path}:{number}: not comma-separated numbers: {line[:60]!r}") from None
        if len(values) not in (22, 41) or (rows and len(values) != len(rows[0])):
            raise DataError(f"data: {path}:{number}: expected 22 or 41 columns, got {len(values)}")
        bad = next((i for i, v in enumerate(values[:-1]) if not abs(v) <= _MAX_ABS), None)  # NaN fails <=
        if bad is not None:
            raise DataError(f"data: {path}:{number}: column {bad + 1} is {line.split(',')[bad].strip()!r}, "
                            f"not a finite number within ±{_MAX_ABS:g}")
        if values[-1] not in (0.0, 1.0, 2.0):
            raise DataError(f"data: {path}:{number}: class label must be 0, 1 or 2, got {values[-1]}")
        rows.append(values)
    if not rows:
        raise DataError(f"data: {path} holds no rows")
    table = np.asarray(rows)
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64), hashlib.sha256(raw).hexdigest()
