"""Reading result files for the analysis: Parquet rows only, never Ray's own folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from prunerlib.errors import DataError

# Without these no table, figure or report can say anything; other columns are needed only
# by some tables, which are skipped (naming the column) when it is absent.
CORE_COLUMNS = ("trial_id", "cycle", "final", "status", "dataset", "pruner", "seed", "acc_finetuned")


class ResultsError(DataError):
    """The results cannot be analysed at all; the message is one line for the user."""


@dataclass(frozen=True)
class Results:
    frame: pd.DataFrame
    files: tuple[Path, ...]
    duplicates: int  # rows seen twice (the same sweep, trial and cycle, e.g. a file given twice), kept once
    repeats: int = 0  # runs dropped because a later run had the same configuration and seed (config_hash)


def load_results(paths: Sequence[str | Path]) -> Results:
    frames = [_read(Path(path)) for path in paths]
    if not frames:
        raise ResultsError("no results file given")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    identity = [c for c in ("sweep", "trial_id", "config_hash", "cycle") if c in frame.columns]
    unique = frame.drop_duplicates(subset=identity, keep="last").reset_index(drop=True)
    latest, repeats = latest_runs(unique)
    return Results(latest, tuple(Path(p) for p in paths), len(frame) - len(unique), repeats)


def latest_runs(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Each configuration and seed (`config_hash` includes the seed) counts once: a repeated
    run is not another seed, it would shrink the spread and inflate n. Of several runs (trial
    ids) with one hash, the most recently started is kept, whatever its outcome; without a
    start time, the one that comes last. Returns the rows kept and the number of runs dropped."""
    if "config_hash" not in frame.columns or frame.empty:
        return frame, 0
    run = [c for c in ("sweep", "trial_id") if c in frame.columns]
    started = pd.to_datetime(frame["started_at"], utc=True, errors="coerce") if "started_at" in frame.columns \
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    runs = (frame[run + ["config_hash"]].assign(started=started, order=range(len(frame)))
            .groupby(run + ["config_hash"], dropna=False, sort=False)
            .agg(started=("started", "max"), order=("order", "max")).reset_index())
    hashed = runs[runs["config_hash"].notna()]
    ordered = hashed.sort_values(["started", "order"], na_position="first", kind="stable")
    dropped = ordered[ordered.duplicated("config_hash", keep="last")]
    if dropped.empty:
        return frame, 0
    drop_keys = pd.MultiIndex.from_frame(dropped[run + ["config_hash"]])
    keep = ~pd.MultiIndex.from_frame(frame[run + ["config_hash"]]).isin(drop_keys)
    return frame[keep].reset_index(drop=True), len(dropped)


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
