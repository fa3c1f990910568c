"""The report's sensitivity section, from real scans of a tiny pretrained FFN: found as a path, in
a folder or beside a trial results file; curves, heat map and a verdict per layer."""

import math

import pandas as pd
import pytest

from prunerlib.analysis.sensitivity import against_random, chance_jaccard, verdicts
from prunerlib.cli import main

TINY = ["--dataset", "waveform", "--attributes", "21", "--n", "600", "--epochs-pretrain", "6", "--patience", "2"]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scan")
    for seed in (0, 1, 2):
        assert main(["sensitivity", *TINY, "--fractions", "0.3,0.5,0.8", "--seed", str(seed), "--out",
                     str(tmp / "results"), "--workdir", str(tmp / "work"), "--quiet"]) == 0
    return tmp


def _report(capsys, *args):
    assert main(["report", *map(str, args)]) == 0
    return capsys.readouterr()


def test_a_scan_alone_makes_a_report_with_its_figures(scanned, capsys, tmp_path):
    _report(capsys, scanned / "results", "--out", tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Sensitivity: one layer at a time, without fine-tuning" in text
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figures == ["sensitivity_1.png", "sensitivity_2.png", "sensitivity_agreement.png"]
    assert all(f"]({name})" in text for name in figures)
    # One verdict per layer: units and incoming weights of fc1, three seeds.
    verdict_lines = [line for line in text.splitlines() if line.startswith("- **Waveform, 21 attr.: fc1")
                     and ("none" in line or "distinguishable" in line)]
    assert len(verdict_lines) == 2 and all("3 seeds" in line for line in verdict_lines)
    assert "Distinctiveness at 15°" in text


def test_a_scan_beside_a_results_file_adds_its_section_to_the_trial_report(scanned, capsys, tmp_path):
    results = scanned / "results" / "results.parquet"
    if not results.exists():
        assert main(["run", *TINY, "--epochs-finetune", "1", "--pruner", "threshold", "--out", str(results),
                     "--workdir", str(scanned / "work"), "--quiet", "--no-measure-latency",
                     "--save-models", "none"]) == 0
    _report(capsys, results, "--out", tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Pruning sweep report") and "## Sensitivity: one layer at a time" in text
    assert (tmp_path / "sensitivity_agreement.png").is_file()


def _rows(diffs_by_seed):
    """Validation accuracy of l1 and random on one panel: random 0.7, l1 0.7 + the seed's diff."""
    return pd.DataFrame([{"panel": "p", "scan": "s", "seed": seed, "fraction": 0.5, "criterion": c,
                          "acc_val": 0.7 + (diff if c == "l1" else 0.0)}
                         for seed, diff in enumerate(diffs_by_seed) for c in ("l1", "random")])


def test_verdicts_say_none_honestly_and_name_a_real_difference():
    same = _rows([0.01, -0.01, 0.02, -0.02, 0.0])
    assert "none" in verdicts(same, against_random(same))[0]
    assert chance_jaccard(25, 50) == pytest.approx(1 / 3)
    better = _rows([0.10, 0.11, 0.09, 0.10, 0.12])
    found = against_random(better)
    assert found[0].p_adj < 0.05 and math.isclose(found[0].diff, 0.104)
    assert "l1 (+10.4 points at 0.5)" in verdicts(better, found)[0]
    one = _rows([0.1])
    assert "one seed only" in verdicts(one, against_random(one))[0]
