import os

import pandas as pd
import pytest

from prunerlib.config import TrialConfig
from prunerlib.errors import TrainingDiverged
from prunerlib.pipeline import failed_rows, identity_columns
from prunerlib.records import columns
from prunerlib.sweep.spec import SpecError, parse_spec
from prunerlib.sweep.store import SweepFolder

SPEC = {"name": "s", "grid": [{"pruner": "none"}]}


def rows_for(seed: int, cycles: int = 1) -> list[dict]:
    cfg = TrialConfig.from_dict({"seed": seed})
    base = identity_columns(cfg, "s", cfg.config_hash())
    return [base | {"cycle": c, "final": c == cycles, "status": "ok", "acc_finetuned": 0.8 + seed / 100}
            for c in range(1, cycles + 1)]


def test_rows_are_kept_per_trial_and_consolidated_once_each(tmp_path):
    folder = SweepFolder(tmp_path, "s")
    folder.begin(parse_spec(SPEC), resume=False)
    for seed in (2, 0, 1):
        folder.write_rows(f"t{seed}", rows_for(seed, cycles=2))
    folder.write_rows("t1", rows_for(1, cycles=2))  # a trial written again replaces, never adds
    assert folder.rows("t9") is None and len(folder.rows("t0")) == 2
    assert {p.stem for p in folder.trials.glob("*.arrow")} == {"t0", "t1", "t2"}
    frame = folder.consolidate()
    on_disk = pd.read_parquet(folder.results)
    assert len(on_disk) == 6 and list(on_disk.columns) == list(columns())
    assert on_disk[["trial_id", "cycle"]].duplicated().sum() == 0 and len(frame) == 6
    assert not list(folder.trials.glob(".*"))  # no temporary file left behind


def test_an_earlier_versions_parquet_trial_files_still_count_and_a_rerun_replaces_them(tmp_path):
    """Sweeps started before trial files were Arrow IPC resume without running a trial twice."""
    import pyarrow.parquet as pq

    from prunerlib.analysis.results import load_results
    from prunerlib.records import to_table

    folder = SweepFolder(tmp_path, "s")
    folder.begin(parse_spec(SPEC), resume=False)
    pq.write_table(to_table(rows_for(0, cycles=2)), folder.trials / "t0.parquet")  # as they were written
    folder.write_rows("t1", rows_for(1))
    assert len(folder.rows("t0")) == 2 and set(folder.finished()) == {"t0", "t1"}
    assert len(load_results([folder.trials]).frame) == 3  # read as a running sweep is
    assert len(folder.consolidate()) == 3
    folder.write_rows("t0", rows_for(0))  # --retry-failed writes it anew: one file, the new rows
    assert sorted(p.name for p in folder.trials.iterdir()) == ["t0.arrow", "t1.arrow"]
    assert len(folder.consolidate()) == 2


def test_failed_rows_consolidate_with_nulls_where_nothing_was_measured(tmp_path):
    folder = SweepFolder(tmp_path, "s")
    folder.begin(parse_spec(SPEC), resume=False)
    cfg = TrialConfig.from_dict({})
    folder.write_rows("bad", failed_rows(identity_columns(cfg, "s", "bad"), TrainingDiverged("loss became nan")))
    row = folder.consolidate().iloc[0]
    assert row["status"] == "failed" and row["error"] == "TrainingDiverged: loss became nan"
    assert pd.isna(row["acc_finetuned"])


def test_an_existing_sweep_needs_resume_and_the_same_spec(tmp_path):
    SweepFolder(tmp_path, "s").begin(parse_spec(SPEC), resume=False)
    with pytest.raises(SpecError, match="already exists.*--resume"):
        SweepFolder(tmp_path, "s").begin(parse_spec(SPEC), resume=False)
    SweepFolder(tmp_path, "s").begin(parse_spec(SPEC), resume=True)
    changed = {**SPEC, "seeds": [0, 1]}
    with pytest.raises(SpecError, match="the spec changed"):
        SweepFolder(tmp_path, "s").begin(parse_spec(changed), resume=True)


def test_the_pack_plan_is_kept_for_a_resumed_sweep(tmp_path):
    folder = SweepFolder(tmp_path, "s")
    folder.begin(parse_spec(SPEC), resume=False)
    assert folder.packs() is None
    plan = {"p000 2 configs": ({"seed": 0}, {"seed": 1}), "p001 none s2": ({"seed": 2},)}
    folder.save_packs(plan)
    assert SweepFolder(tmp_path, "s").packs() == plan


def test_a_second_driver_is_refused_with_the_holders_pid_until_the_first_releases(tmp_path):
    first = SweepFolder(tmp_path, "s")
    first.begin(parse_spec(SPEC), resume=False)
    with pytest.raises(SpecError, match=f"being run by pid {os.getpid()} on "):
        SweepFolder(tmp_path, "s").begin(parse_spec(SPEC), resume=True)
    first.release()
    SweepFolder(tmp_path, "s").begin(parse_spec(SPEC), resume=True)


def test_a_killed_writers_temporaries_are_removed_when_a_driver_begins(tmp_path):
    folder = SweepFolder(tmp_path, "s")
    folder.begin(parse_spec(SPEC), resume=False)
    folder.release()
    left = [folder.trials / ".t1.arrow.x1y2.tmp", folder.root / ".results.parquet.12.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
    SweepFolder(tmp_path, "s").begin(parse_spec(SPEC), resume=True)
    assert not any(path.exists() for path in left)
