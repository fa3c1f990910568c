"""Reading result files for the analysis: Parquet rows only, never Ray's own folders."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from prunerlib.errors import DataError
from prunerlib.files import TEMPORARIES
from prunerlib.records import TRIAL_SUFFIX, read_rows_file, trial_files
from prunerlib.sweep.store import gather

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
    scans: tuple[Path, ...] = ()  # sensitivity scans' files (`analysis.sensitivity`), beside the trial rows


def load_results(paths: Sequence[str | Path]) -> Results:
    """Rows of result files or sweep folders (see `_read_folder`), each run of a configuration
    and seed once. A file still being written (a temporary) is not a result yet: skipped."""
    from prunerlib.analysis.sensitivity import only_a_scan, scan_files

    paths = [Path(path) for path in paths if not _temporary(Path(path))]
    scans = scan_files(paths)
    paths = [path for path in paths if not only_a_scan(path)]
    if scans and not paths:  # a report of sensitivity scans alone
        return Results(pd.DataFrame(columns=list(CORE_COLUMNS)), (), 0, scans=scans)
    frames = [_read_folder(path) if path.is_dir() else _read(path) for path in paths]
    if not frames:
        raise ResultsError("no results file given")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    identity = [c for c in ("sweep", "trial_id", "config_hash", "cycle") if c in frame.columns]
    unique = frame.drop_duplicates(subset=identity, keep="last").reset_index(drop=True)
    latest, repeats = latest_runs(unique)
    return Results(latest, tuple(paths), len(frame) - len(unique), repeats, scans)


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
    return _read_table(path).to_pandas()


def _temporary(path: Path) -> bool:
    return fnmatch.fnmatch(path.name, TEMPORARIES)


def _read_folder(path: Path) -> pd.DataFrame:
    """A sweep folder, or a folder of trial files such as a running sweep's `trials/`: every
    finished trial's rows, gathered as the sweep's own consolidation gathers them (the trial
    files, then what `results.parquet` holds of trials no file holds any more; each trial and
    cycle once, in trial order), so a finished sweep's folder reads as its results.parquet.
    A trial file appears whole, by a rename, or not at all: a temporary is skipped, and so is
    a file renamed or moved aside while the folder is read."""
    trials = path / "trials" if (path / "trials").is_dir() else path
    files = trial_files(trials)
    tables = [table for table in map(_read_table, files) if table is not None]
    consolidated = path / "results.parquet"
    old = _read_table(consolidated) if trials != path and consolidated.is_file() else None
    if not tables and (old is None or not len(old)):
        raise ResultsError(f"{path}: no result files in this folder (a sweep folder's trials/ fills as its trials "
                           "finish)")
    return gather(tables, old)


def _read_table(path: Path) -> pa.Table | None:
    """One file of a folder; None when it is gone (renamed or moved aside meanwhile)."""
    try:
        table = read_rows_file(path)
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError, ValueError) as exc:  # the analysis reads; it moves nothing aside
        kind = "trial file" if path.suffix == TRIAL_SUFFIX else "Parquet file"
        raise ResultsError(f"{path}: not a readable {kind} ({type(exc).__name__})") from None
    missing = [column for column in CORE_COLUMNS if column not in table.column_names]
    if missing:
        raise ResultsError(f"{path}: missing required column(s) {', '.join(missing)}")
    return table
