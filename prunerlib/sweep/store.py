"""The sweep folder: the spec as run, each finished trial's rows, shared pretrained models,
the Optuna journal, Tune's own state, and the consolidated results.

    <storage>/<name>/spec.yaml         the spec as run (a resumed sweep must match it)
    <storage>/<name>/packs.json        the grid's packs: which configurations each Tune trial runs
    <storage>/<name>/trials/<id>.arrow     one file per finished trial configuration (Arrow IPC:
                                       records.TRIAL_SUFFIX; earlier versions' <id>.parquet are read)
    <storage>/<name>/pretrained/       one model per pretraining key, shared by all trials
    <storage>/<name>/models/<id>.pt    each trial's final pruned model, compacted (spec save_models;
                                       written before the trial's rows, so a row's model_path exists)
    <storage>/<name>/optuna.journal    the Optuna study (search sweeps)
    <storage>/<name>/tune/             Tune's experiment state (logs; not needed to resume)
    <storage>/<name>/results.parquet   every row, each trial once
    <storage>/<name>/.driver.lock      held (flock) by the one driver running the sweep

A trial's rows are written to a temporary name and renamed, so a file either holds a whole
finished trial or does not exist: that is what makes resuming lose and duplicate nothing.
A file that is there but unreadable anyway (a full disk, a copy cut short) is moved aside as
`<id>.arrow.corrupt` and its configuration counts as not run.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from prunerlib.files import TEMPORARIES, atomic_write, locked
from prunerlib.records import TRIAL_SUFFIX, concat, conform, read_rows_file, schema, to_table, trial_files, write_trial_file
from prunerlib.sweep.spec import SpecError, SweepSpec


class SweepFolder:
    def __init__(self, storage: str | Path, name: str):
        self.root = Path(storage).expanduser().resolve() / name
        self.spec_file = self.root / "spec.yaml"
        self.trials = self.root / "trials"
        self.pretrained = self.root / "pretrained"
        self.models = self.root / "models"
        self.journal = self.root / "optuna.journal"
        self.tune = self.root / "tune"
        self.results = self.root / "results.parquet"
        self.packs_file = self.root / "packs.json"
        self._lock: ExitStack | None = None

    def begin(self, spec: SweepSpec, resume: bool) -> None:
        """Create the folder for a new sweep, or check that a resumed one runs the same spec;
        then take the folder's driver lock and clear what a crashed driver left half-written."""
        if self.spec_file.exists():
            if not resume:
                raise SpecError(f"name: sweep {spec.name!r} already exists in {self.root}: add --resume to "
                                f"continue it (finished trials are kept), or choose another name or --storage")
            if yaml.safe_load(self.spec_file.read_text()) != spec.raw:
                raise SpecError(f"name: the spec changed since sweep {spec.name!r} started in {self.root}; "
                                f"resume it with the same spec, or give the changed one a new name")
        elif resume:  # most often a mistyped --storage: starting afresh would hide the real sweep
            raise SpecError(f"--resume: there is no sweep {spec.name!r} in {self.root.parent} (no {self.spec_file.name}); "
                            f"check --storage, or drop --resume to start it")
        try:
            self.trials.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            if not self.spec_file.exists():
                atomic_write(self.spec_file, lambda tmp: tmp.write_text(yaml.safe_dump(spec.raw, sort_keys=False)))
        except OSError as exc:  # read-only, full, or not there: the user's storage, not a bug
            raise SpecError(f"storage: cannot write in {exc.filename or self.root}: {exc.strerror}; "
                            f"choose a writable --storage") from None
        self._remove_temporaries()

    def _take_lock(self) -> None:
        """One driver per sweep folder: two would run the same configurations and race on the
        results. flock is released by the kernel when the holder dies, so a crash never leaves
        a stale lock behind."""
        lock = self.root / ".driver.lock"
        stack = ExitStack()
        handle = stack.enter_context(locked(lock, wait=False))
        if handle is None:
            stack.close()
            holder = lock.read_text().strip() or "another process"
            raise SpecError(f"--resume: sweep {self.root.name!r} in {self.root.parent} is being run by {holder}; "
                            f"wait for it to end (or stop it) before resuming")
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._lock = stack  # kept open: closing it releases the lock

    def release(self) -> None:
        """Let the next driver in (a process that ends releases it anyway)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _remove_temporaries(self) -> None:
        """A driver or worker killed mid-write leaves `.<name>.*.tmp`; the lock says no one
        else is writing now."""
        for folder in (self.root, self.trials):
            for tmp in folder.glob(TEMPORARIES):
                tmp.unlink(missing_ok=True)

    def save_packs(self, packs: dict[str, tuple[dict[str, Any], ...]]) -> None:
        atomic_write(self.packs_file, lambda tmp: tmp.write_text(json.dumps(packs)))

    def packs(self) -> dict[str, tuple[dict[str, Any], ...]] | None:
        """The packs the sweep started with, or None before it started."""
        if not self.packs_file.exists():
            return None
        return {label: tuple(members) for label, members in json.loads(self.packs_file.read_text()).items()}

    def rows(self, trial_id: str) -> list[dict[str, Any]] | None:
        """The finished trial's rows, or None when it has not finished (or its file was
        unreadable, and is now moved aside)."""
        table = self._read(self._trial_file(trial_id))
        if table is None and self._legacy_file(trial_id).exists():
            table = self._read(self._legacy_file(trial_id))
        return None if table is None else table.to_pylist()

    def finished(self) -> dict[str, list[dict[str, Any]]]:
        """Every readable trial file's rows, by trial id."""
        found = {}
        for path in trial_files(self.trials):
            table = self._read(path)
            if table is not None:
                found[path.stem] = table.to_pylist()
        return found

    def write_rows(self, trial_id: str, rows: list[dict[str, Any]]) -> Path:
        path = self._trial_file(trial_id)
        table = to_table(rows)
        atomic_write(path, lambda tmp: write_trial_file(tmp, table))
        self._legacy_file(trial_id).unlink(missing_ok=True)  # --retry-failed over an earlier version's file
        return path

    def consolidate(self) -> pd.DataFrame:
        """Every finished trial's rows in one file, each (trial, cycle) once, in a stable order.
        A configuration the previous results.parquet held but no trial file holds any more is
        kept from it: the results file never shrinks."""
        tables = [t for t in map(self._read, trial_files(self.trials)) if t is not None]
        old = None
        if self.results.exists():
            try:
                old = pq.read_table(self.results)
            except (pa.ArrowException, OSError, ValueError):
                old = None  # derived data: the trial files are the record
        frame = gather(tables, old)
        out = conform(pa.Table.from_pandas(frame, preserve_index=False))
        atomic_write(self.results, lambda tmp: pq.write_table(out, tmp))
        return frame

    def _read(self, path: Path) -> pa.Table | None:
        try:
            return conform(read_rows_file(path))
        except FileNotFoundError:
            return None
        except (pa.ArrowException, ValueError, OSError) as exc:
            aside = path.with_name(path.name + ".corrupt")
            try:
                os.replace(path, aside)
            except FileNotFoundError:  # another reader moved it first
                pass
            print(f"warning: {path} is unreadable ({str(exc).splitlines()[0][:120]}); moved aside to {aside.name}, "
                  f"its configuration will run again", file=sys.stderr)
            return None

    def _trial_file(self, trial_id: str) -> Path:
        return self.trials / f"{trial_id}{TRIAL_SUFFIX}"

    def _legacy_file(self, trial_id: str) -> Path:
        return self.trials / f"{trial_id}.parquet"



def gather(trial_tables: list[pa.Table], results: pa.Table | None = None) -> pd.DataFrame:
    """A sweep's rows from its trial files' tables and its previous results file: every trial
    file's rows, then what the results file holds of trials no file holds any more; each
    (trial, cycle) once, in trial order. What `consolidate` writes, and what the analysis
    reads of a sweep folder, running or finished."""
    frame = (concat(trial_tables) if trial_tables else schema().empty_table()).to_pandas()
    if results is not None and len(results):
        old = conform(results).to_pandas()
        frame = pd.concat([old[~old["trial_id"].isin(frame["trial_id"])], frame])
    frame = frame.drop_duplicates(["trial_id", "cycle"], keep="last").sort_values(["trial_id", "cycle"])
    return frame.reset_index(drop=True)
