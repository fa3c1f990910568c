"""Reading result files for the analysis CLIs: Parquet rows only, never Ray's own folders."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

# Without these no table, figure or report can say anything; other columns are needed only
# by some tables, which are skipped (naming the column) when it is absent.
CORE_COLUMNS = ("trial_id", "cycle", "final", "status", "dataset", "pruner", "seed", "acc_finetuned")


class ResultsError(Exception):
    """The results cannot be analysed at all; the message is one line for the user."""


@dataclass(frozen=True)
class Results:
    frame: pd.DataFrame
    files: tuple[Path, ...]
    duplicates: int  # rows seen twice (the same sweep, trial and cycle, e.g. a file given twice), kept once


def load_results(paths: Sequence[str | Path]) -> Results:
    frames = [_read(Path(path)) for path in paths]
    if not frames:
        raise ResultsError("no results file given")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    identity = [c for c in ("sweep", "trial_id", "config_hash", "cycle") if c in frame.columns]
    unique = frame.drop_duplicates(subset=identity, keep="last").reset_index(drop=True)
    return Results(unique, tuple(Path(p) for p in paths), len(frame) - len(unique))


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ResultsError(f"{path}: no such results file")
    try:
        frame = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ResultsError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    missing = [column for column in CORE_COLUMNS if column not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing required column(s) {', '.join(missing)}")
    return frame


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """A user's mistake (a missing file or column, an output folder that cannot be written) is
    one line on stderr and exit code 2."""
    try:
        return main(argv)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
    return 2

