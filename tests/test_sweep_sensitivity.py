"""`kind: sensitivity` sweeps on real Ray: the scan's rows in the sweep folder, the same numbers
`prunerlib sensitivity` computes, a killed driver resumed without losing or doubling a unit,
a unit that cannot be scanned recorded while the sweep goes on, and the report."""

import pandas as pd
import pytest
import yaml

from prunerlib.cli import main
from prunerlib.config import TrialConfig
from prunerlib.sensitivity import scan
from tests.test_faults_sweep import _session, cli, one_line, ray_here, stop_group, wait_for  # noqa: F401

TINY = {"dataset": "waveform", "n": 600, "epochs_pretrain": 3, "patience": 2}
SPEC = {"name": "scan", "kind": "sensitivity", "fixed": TINY, "seeds": [0, 1],
        "sensitivity": {"fractions": [0.25, 0.5], "criteria": ["l1", "random"]}}
KEY = ["seed", "layer", "what", "criterion", "fraction"]
PAIR = ["seed", "layer", "what", "criterion_a", "criterion_b", "fraction"]


def sweep(base, spec: dict, *extra: str) -> int:
    (base / "spec.yaml").write_text(yaml.safe_dump(spec))
    return main(["sweep", str(base / "spec.yaml"), "--storage", str(base / "runs"), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_here):
    """The tiny scan, and beside it one of a data file no unit can read: the sweep goes on (exit 1)."""
    base = tmp_path_factory.mktemp("scan")
    bad = base / "waveform.data"
    bad.write_text("not,a,number\n" * 20)
    spec = {**SPEC, "sensitivity": {**SPEC["sensitivity"], "vary": {"data": [None, str(bad)]}}}
    assert sweep(base, spec) == 1
    return base / "runs" / "scan"


def test_a_sweep_writes_the_scan_of_every_seed_as_prunerlib_sensitivity_does(finished, tmp_path):
    sens, agree = pd.read_parquet(finished / "sensitivity.parquet"), pd.read_parquet(finished / "agreement.parquet")
    # Units by l1 and random, weights by random alone (l1 ranks units): 2 seeds x (2 + 1) x 2 fractions.
    assert len(sens) == 12 and not sens.duplicated(KEY).any() and set(sens["seed"]) == {0, 1}
    assert set(map(tuple, sens[["what", "criterion"]].drop_duplicates().to_numpy())) == {
        ("units", "l1"), ("units", "random"), ("weights", "random")}
    # Per seed: l1 against random at 2 fractions, distinctiveness's own set against each.
    assert len(agree) == 8 and not agree.duplicated(PAIR).any()
    assert list(finished.glob("pretrained/*/model.pt"))  # shared in the sweep folder, as a grid's are
    # The same computation: a scan of seed 1 from the sweep's pretrained model gives the same rows.
    cfg = TrialConfig.from_dict({**TINY, "seed": 1})
    direct, direct_agree = scan(cfg, tmp_path, fractions=(0.25, 0.5), criteria=("l1", "random"), workdir=finished,
                                progress=False)
    numbers = ["removed", "size", "acc_val", "acc_test", "acc_val_pretrained", "scan", "pretrain_key"]
    ours = sens[sens["seed"] == 1].set_index(KEY).sort_index()[numbers]
    pd.testing.assert_frame_equal(ours, direct.set_index(KEY).sort_index()[numbers])
    ours = agree[agree["seed"] == 1].set_index(PAIR).sort_index()[["removed", "jaccard", "spearman"]]
    pd.testing.assert_frame_equal(ours, direct_agree.set_index(PAIR).sort_index()[["removed", "jaccard", "spearman"]])


def test_the_report_of_the_sweep_folder_has_the_sensitivity_section(finished, tmp_path):
    assert main(["report", str(finished), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Sensitivity: one layer at a time" in text and "fc1" in text


def test_spec_mistakes_are_one_line_at_their_key_path(tmp_path, capsys):
    for value, expected in (("sensitivity.fractions=[0.5, 1.5]", "sensitivity.fractions[1]: 1.5 is outside (0, 1)"),
                            ("sensitivity.criteria=[l2]", "sensitivity.criteria[0]: must be one of"),
                            ("pack_size=4", "pack_size: not for a sensitivity sweep"),
                            ("epochs_finetune=2", "fixed.epochs_finetune: a sensitivity scan")):
        assert sweep(tmp_path, SPEC, "--dry-run", "--set", value) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    assert sweep(tmp_path, SPEC, "--dry-run") == 0
    plan = capsys.readouterr().out
    assert "4 unit(s)" in plan and "u000 fc1 units a40 s0" in plan and "u003 fc1 weights a40 s1" in plan


def test_a_killed_driver_resumes_every_unit_exactly_once_and_leaves_finished_units_alone(tmp_path, monkeypatch,
                                                                                         ray_here):
    slow = {**SPEC, "name": "slow", "seeds": [0, 1, 2], "max_concurrent": 1,
            "fixed": {**TINY, "epochs_pretrain": 20, "patience": 20}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(slow))
    scans = tmp_path / "runs" / "slow" / "scans"
    driver = cli("sweep", "spec.yaml", "--storage", "runs", cwd=tmp_path, wait=False)
    try:
        wait_for(lambda: len(list(scans.glob("*.sensitivity.parquet"))) >= 1, driver, "no unit finished")
    finally:
        stop_group(driver)  # SIGKILL: the driver and the Ray it started, mid-sweep
        driver.communicate(timeout=60)
    kept = {p.name: p.stat().st_mtime_ns for p in scans.glob("*.parquet")}
    assert 2 <= len(kept) < 12, sorted(kept)  # some units whole, some not started
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "spec.yaml", "--storage", "runs", "--resume"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in scans.glob("*.parquet") if p.name in kept} == kept
    sens = pd.read_parquet(tmp_path / "runs" / "slow" / "sensitivity.parquet")
    assert len(sens) == 18 and not sens.duplicated(KEY).any() and len(list(scans.glob("*.parquet"))) == 12


def test_a_unit_that_cannot_be_scanned_is_recorded_and_the_sweep_goes_on(finished, capsys):
    records = list((finished / "scans").glob("*.failed.json"))
    assert len(records) == 4 and all('"status": "failed"' in r.read_text() for r in records)
    # Resuming runs nothing again (a failed unit is a result until --retry-failed) and says so.
    assert main(["sweep", str(finished.parents[1] / "spec.yaml"), "--storage", str(finished.parent), "--resume"]) == 1
    out, err = capsys.readouterr()
    assert "0 of 8 unit(s) to run" in out and "Traceback" not in err
    assert "4 of 8 unit(s) failed" in err and "--resume --retry-failed" in err and "waveform.data" in err
    sens = pd.read_parquet(finished / "sensitivity.parquet")  # consolidated again: nothing doubled
    assert len(sens) == 12 and not sens.duplicated(KEY).any()
