"""Measured against theoretical speedup in the report: the figure, the 'Measured speedup' table
and the words on where the two disagree; skipped with a reason for files from before timing."""

import pandas as pd
import pytest

from prunerlib.analysis.command import report_main
from prunerlib.analysis.results import load_results
from prunerlib.analysis.speed import LATENCY_COLUMNS, speed_sentences, speed_table
from prunerlib.pipeline import Workdirs, run_trial
from prunerlib.records import append_parquet
from tests.analysis_rows import handmade_rows, timed_rows, write_results
from tests.helpers import ffn_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMING_COLUMNS = tuple(c for c in LATENCY_COLUMNS if c not in ("theoretical_speedup", "device"))


def report(tmp_path, results, capsys) -> tuple[str, str]:
    assert report_main([str(results), "--out", str(tmp_path / "out")]) == 0
    return (tmp_path / "out" / "report.md").read_text(), capsys.readouterr().err


def test_timed_rows_give_the_figure_the_table_and_its_words(tmp_path, capsys):
    text, _ = report(tmp_path, write_results(tmp_path / "r.parquet", timed_rows(threshold=2.0)), capsys)
    out = tmp_path / "out"
    assert (out / "measured_vs_theoretical.png").read_bytes().startswith(PNG_MAGIC)
    for suffix in ("md", "csv", "tex"):
        assert (out / f"measured_speed.{suffix}").stat().st_size > 0
    assert "![measured_vs_theoretical](measured_vs_theoretical.png)" in text
    table = text[text.index("## Measured speedup"):text.index("## Figures")]
    # distinctiveness, 3 seeds: theoretical 2.00, measured 0.9 × that at batch 256, 1.02 at batch 1
    assert "| Distinctiveness | Waveform, 40 attr. | 15° | 16.0% hidden units | 2.00 [2.00, 2.00] (n=3) | " \
           "1.80 [1.80, 1.80] (n=3) | 256 | 1.02 [1.02, 1.02] (n=3) | 0.080 → 0.044 | 0.012 → 0.012 | cpu (1) |" \
           in table
    assert "| Threshold | Waveform, 40 attr. | ×1 mean_abs |" in table and "| Dist. Model | Dogs vs. Cats |" in table
    assert "### Where measured and theoretical speedups disagree" in table and "Timed on cpu, 1 thread." in table
    data = pd.read_csv(out / "measured_speed.csv")
    assert data.set_index("pruner").loc["threshold", "measured_mean"] == 1.0


def test_an_unstructured_pruner_without_measured_speedup_is_explained_by_what_it_removes(tmp_path):
    results = load_results([write_results(tmp_path / "r.parquet", timed_rows(threshold=2.0))])
    sentences = speed_sentences(speed_table(results.frame))
    threshold = [s for s in sentences if s.startswith("**Threshold")]
    assert threshold == ["**Threshold, Waveform, 40 attr. (×1 mean_abs), batch 256 and 1**: theoretical 2.00×, "
                         "measured 1.00× and 1.00× — Threshold zeroes single weights (incoming weights of the hidden "
                         "layer): the FLOP count skips the zeros, but the saved network keeps its dense shapes and a "
                         "dense kernel multiplies the zeros too; only removed units or filters shrink the matrices."]
    # Distinctiveness removes units: within 25% at batch 256 (no sentence), overhead at batch 1.
    distinct = [s for s in sentences if s.startswith("**Distinctiveness")]
    assert len(distinct) == 1 and "batch 1**" in distinct[0] and "mostly call overhead" in distinct[0]
    assert "zeroes single weights" not in distinct[0]
    cnn = [s for s in sentences if s.startswith("**Dist. Model")]
    assert len(cnn) == 1 and "pooling, activations and memory traffic" in cnn[0]


def test_speedups_that_agree_get_no_disagreement_sentence(tmp_path):
    agreeing = [r | {"measured_speedup": r["theoretical_speedup"], "measured_speedup_b1": r["theoretical_speedup"]}
                if r.get("measured_speedup") is not None else r for r in timed_rows(threshold=1.1)]
    results = load_results([write_results(tmp_path / "r.parquet", agreeing)])
    sentences = speed_sentences(speed_table(results.frame))
    assert sentences[1:] == ["They agree within 25% for every setting in the table, at both batch sizes."]


@pytest.mark.parametrize("old", ["null columns", "no columns"])
def test_files_from_before_timing_skip_the_figure_and_table_with_a_reason(tmp_path, capsys, old):
    drop = TIMING_COLUMNS if old == "no columns" else ()
    text, err = report(tmp_path, write_results(tmp_path / "r.parquet", handmade_rows(), drop=drop), capsys)
    reason = "no final ok row has a measured latency (files written before prunerlib timed its models"
    assert f"skipped: figure measured_vs_theoretical: {reason}" in err
    assert f"skipped: Measured speedup: {reason}" in err
    assert "## Not produced" in text and f"- Measured speedup: {reason}" in text
    assert "## Measured speedup" not in text and not (tmp_path / "out" / "measured_speed.md").exists()
    assert not (tmp_path / "out" / "measured_vs_theoretical.png").exists()
    assert "## Table 1" in text and (tmp_path / "out" / "accuracy_vs_speedup.png").exists()


def test_real_timed_trials_make_the_report(tmp_path, capsys):
    """Threshold and distinctiveness on Waveform, trained, pruned and timed by the real pipeline."""
    dirs = Workdirs(pretrained=tmp_path / "pre", latency_batch=8)
    results = tmp_path / "results.parquet"
    for pruner in ("threshold", "distinctiveness"):
        append_parquet(results, run_trial(ffn_config(pruner=pruner), dirs, progress=False))
    text, err = report(tmp_path, results, capsys)
    assert "measured_vs_theoretical" not in err and "Measured speedup:" not in err
    data = pd.read_csv(tmp_path / "out" / "measured_speed.csv").set_index("pruner")
    threshold = data.loc["threshold"]
    assert threshold["latency_batch"] == 8 and threshold["latency_threads"] == 1 and threshold["device"] == "cpu"
    # zeroed weights: the compacted network has the dense shapes, so the clock sees no speedup
    assert threshold["measured_mean"] == 1.0 and threshold["theoretical_mean"] > 1.25
    assert "**Threshold, Waveform, 40 attr. (×1 mean_abs), batch 8 and 1**" in text
    assert "Threshold zeroes single weights" in text
    assert data.loc["distinctiveness", "latency_ms_dense"] > 0
    assert (tmp_path / "out" / "measured_vs_theoretical.png").read_bytes().startswith(PNG_MAGIC)
