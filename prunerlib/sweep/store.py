"""The sweep folder: the spec as run, each finished trial's rows, shared pretrained models,
the Optuna journal, Tune's own state, and the consolidated results.

    <storage>/<name>/spec.yaml         the spec as run (a resumed sweep must match it)
    <storage>/<name>/packs.json        the grid's packs: which configurations each Tune trial runs
    <storage>/<name>/trials/<id>.parquet   one file per finished trial configuration
    <storage>/<name>/pretrained/       one model per pretraining key, shared by all trials
    <storage>/<name>/optuna.journal    the Optuna study (search sweeps)
    <storage>/<name>/tune/             Tune's experiment state (for Tuner.restore)
    <storage>/<name>/results.parquet   every row, each trial once

A trial's rows are written to a temporary name and renamed, so a file either holds a whole
finished trial or does not exist: that is what makes resuming lose and duplicate nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from prunerlib.records import SCHEMA, to_table
from prunerlib.sweep.spec import SpecError, SweepSpec


class SweepFolder:
    def __init__(self, storage: str | Path, name: str):
        self.root = Path(storage).expanduser().resolve() / name
        self.spec_file = self.root / "spec.yaml"
        self.trials = self.root / "trials"
        self.pretrained = self.root / "pretrained"
        self.journal = self.root / "optuna.journal"
        self.tune = self.root / "tune"
        self.results = self.root / "results.parquet"
        self.plan = self.root / "packs.json"

    def begin(self, spec: SweepSpec, resume: bool) -> None:
        """Create the folder for a new sweep, or check that a resumed one runs the same spec."""
        if self.spec_file.exists():
            if not resume:
                raise SpecError(f"name: sweep {spec.name!r} already exists in {self.root}: add --resume to "
                                f"continue it (finished trials are kept), or choose another name or --storage")
            if yaml.safe_load(self.spec_file.read_text()) != spec.raw:
                raise SpecError(f"name: the spec changed since sweep {spec.name!r} started in {self.root}; "
                                f"resume it with the same spec, or give the changed one a new name")
            return
        self.trials.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.spec_file, lambda tmp: Path(tmp).write_text(yaml.safe_dump(spec.raw, sort_keys=False)))

    def save_packs(self, packs: dict[str, tuple[dict[str, Any], ...]]) -> None:
        _atomic_write(self.plan, lambda tmp: Path(tmp).write_text(json.dumps(packs)))

    def packs(self) -> dict[str, tuple[dict[str, Any], ...]] | None:
        """The packs the sweep started with, or None before it started."""
        if not self.plan.exists():
            return None
        return {label: tuple(members) for label, members in json.loads(self.plan.read_text()).items()}

    def rows(self, trial_id: str) -> list[dict[str, Any]] | None:
        """The finished trial's rows, or None when it has not finished."""
        path = self._trial_file(trial_id)
        return pq.read_table(path).to_pylist() if path.exists() else None

    def write_rows(self, trial_id: str, rows: list[dict[str, Any]]) -> Path:
        path = self._trial_file(trial_id)
        table = to_table(rows)
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        return path

    def consolidate(self) -> pd.DataFrame:
        """Every finished trial's rows in one file, each (trial, cycle) once, in a stable order."""
        files = sorted(self.trials.glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(f).cast(SCHEMA) for f in files]) if files else SCHEMA.empty_table()
        frame = table.to_pandas()
        frame = frame.drop_duplicates(["trial_id", "cycle"], keep="last").sort_values(["trial_id", "cycle"])
        out = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
        _atomic_write(self.results, lambda tmp: pq.write_table(out, tmp))
        return frame.reset_index(drop=True)

    def _trial_file(self, trial_id: str) -> Path:
        return self.trials / f"{trial_id}.parquet"


def _atomic_write(path: Path, write) -> None:  # noqa: ANN001  (a callable taking the temporary path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
