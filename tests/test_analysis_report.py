import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from prunerlib.analysis.command import add_report_parser, report_main, run_report, tables_main
from prunerlib.analysis.results import ResultsError, load_results
from prunerlib.analysis.tables import table1
from prunerlib.sweep.store import SweepFolder
from tests.analysis_rows import handmade_rows, write_results

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ANALYSIS / name), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("report")
    results = write_results(tmp / "results.parquet")
    (tmp / "spec.yaml").write_text("name: handmade\nseeds: [0, 1, 2]\n")  # as a sweep folder keeps it
    return tmp / "out", script("report.py", str(results), "--out", str(tmp / "out"))


def test_report_prints_its_path_and_writes_every_table_and_figure(report):
    out, done = report
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "report.md")
    for name in ("table1", "table2", "table3", "comparison", "all_settings"):
        for suffix in ("md", "csv", "tex"):
            assert (out / f"{name}.{suffix}").stat().st_size > 0
    for name in ("accuracy_vs_removed", "accuracy_vs_speedup", "accuracy_per_cycle"):
        assert (out / f"{name}.png").stat().st_size > 0


def test_report_references_each_figure_and_table(report):
    out, _ = report
    text = (out / "report.md").read_text()
    for name in ("accuracy_vs_removed", "accuracy_vs_speedup", "accuracy_per_cycle"):
        assert f"]({name}.png)" in text
    for title in ("Table 1 — Waveform FFN test accuracy (%)", "Table 2 — share of the hidden layer removed (%)",
                  "Table 3 — Dogs vs. Cats CNN (%)", "Honest comparison", "All settings"):
        assert f"## {title}" in text
    for name in ("table1", "table2", "table3", "comparison", "all_settings"):
        assert f"({name}.csv)" in text and f"({name}.tex)" in text


def test_report_gives_provenance_failures_and_verdicts(report):
    out, _ = report
    text = (out / "report.md").read_text()
    assert "handmade (" in text and "torch 2.14.1" in text and "cpu (" in text and "node-a" in text
    assert "Failed trials: **1** of" in text and "RuntimeError: loss diverged" in text
    assert "Compute time" in text and "```yaml\nname: handmade\nseeds: [0, 1, 2]\n```" in text
    assert "**Table 1, 40 attr., Distinctiveness (15°)**" in text and "is **not supported**" in text
    assert "Holm–Bonferroni over the report's 7 paired comparisons with two or more seeds (family-wise error 5%)" in text
    assert "not supported after Holm correction over 7 comparisons" in text.replace("**", "")
    assert "copying error" in text and "VGG16" in text


def test_a_table_without_rows_is_named_and_the_others_are_written(tmp_path, capsys):
    waveform = [r for r in handmade_rows() if r["dataset"] == "waveform"]
    results = write_results(tmp_path / "r.parquet", waveform)
    assert report_main([str(results), "--out", str(tmp_path / "out")]) == 0
    assert "skipped: Table 3: no final ok rows for Dogs vs. Cats" in capsys.readouterr().err
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Not produced" in text and "Table 3: no final ok rows" in text
    assert (tmp_path / "out" / "table1.md").exists() and not (tmp_path / "out" / "table3.md").exists()


def test_paper_tables_cli_writes_markdown_csv_and_latex(tmp_path, capsys):
    results = write_results(tmp_path / "r.parquet")
    assert tables_main([str(results), "--out", str(tmp_path / "t")]) == 0
    assert len(capsys.readouterr().out.split()) == 5
    assert (tmp_path / "t" / "table1.md").read_text().startswith("# Table 1")
    assert r"\begin{table}" in (tmp_path / "t" / "table1.tex").read_text()


@pytest.mark.parametrize("name", ["report.py", "paper_tables.py", "pareto.py"])
def test_a_file_missing_a_required_column_is_one_line_and_exit_2(tmp_path, name):
    results = write_results(tmp_path / "r.parquet", drop=("acc_finetuned",))
    done = script(name, str(results), "--out", str(tmp_path / "out"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "acc_finetuned" in lines[0] and "Traceback" not in done.stderr


def test_a_missing_results_file_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert report_main([str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: no such results file"]


def test_an_unwritable_output_folder_is_one_line_and_exit_2(tmp_path, capsys):
    results = write_results(tmp_path / "r.parquet")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert tables_main([str(results), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {blocker / 'out'}")


def test_several_results_files_are_read_together_and_duplicates_dropped(tmp_path):
    waveform_rows = [r for r in handmade_rows() if r["dataset"] == "waveform"]
    first = write_results(tmp_path / "a.parquet")
    waveform = write_results(tmp_path / "b.parquet", waveform_rows)  # a second copy of some rows
    loaded = load_results([first, waveform])
    assert loaded.duplicates == len(waveform_rows) and len(loaded.frame) == len(handmade_rows())
    assert loaded.files == (first, waveform)


def _rerun(rows: list[dict], trial_id: str, acc: float, started: str) -> list[dict]:
    """The rows of `trial_id` run again as `prunerlib run` would: same configuration and seed
    (config_hash), a new trial id and start time, its own accuracy."""
    return [r | {"trial_id": f"{trial_id}-rerun", "started_at": pd.Timestamp(started, tz="UTC"),
                 "acc_finetuned": acc} for r in rows if r["trial_id"] == trial_id]


def test_a_rerun_of_the_same_configuration_and_seed_counts_once_the_most_recent_kept(tmp_path):
    rows = [r | {"started_at": pd.Timestamp("2025-01-01 10:00", tz="UTC")} for r in handmade_rows()]
    rows += _rerun(rows, "dist15-0", 0.90, "2025-01-02 10:00")  # seed 0 again, a day later
    rows = _rerun(rows, "dist15-1", 0.10, "2024-12-31 10:00") + rows  # seed 1 again, a day earlier
    loaded = load_results([write_results(tmp_path / "r.parquet", rows)])
    dist = loaded.frame[loaded.frame["config_hash"].str.startswith("dist15-")].set_index("seed")["acc_finetuned"]
    assert dist.sort_index().to_dict() == {0: 0.90, 1: 0.84, 2: 0.86}
    assert loaded.repeats == 2 and loaded.duplicates == 0
    fine = table1(loaded.frame).data
    fine = fine[fine["Method"].eq("Distinctiveness") & fine["Stage"].eq("fine-tune") & fine["Attr."].eq(40)]
    assert list(fine["n"]) == [3]
    done = script("report.py", str(tmp_path / "r.parquet"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "out" / "report.md").read_text()
    assert "2 repeat runs of a configuration and seed dropped (the most recent run of each kept)" in text


def test_identical_repeats_are_not_seeds(tmp_path):
    rows = handmade_rows()
    rows += [r | {"trial_id": r["trial_id"] + "-again"} for r in rows if r["trial_id"].startswith("dist15-")]
    loaded = load_results([write_results(tmp_path / "r.parquet", rows)])
    assert len(loaded.frame) == len(handmade_rows()) and loaded.repeats == 3


def _running_sweep(storage: Path, rows: list[dict]) -> SweepFolder:
    """A sweep folder as a running sweep leaves it: its spec, one file per finished trial
    written by the store's own writer, no results.parquet yet, and a trial being written."""
    folder = SweepFolder(storage, "handmade")
    folder.root.mkdir(parents=True)
    folder.spec_file.write_text("name: handmade\nseeds: [0, 1, 2]\n")
    for trial_id in dict.fromkeys(r["trial_id"] for r in rows):
        folder.write_rows(trial_id, [r for r in rows if r["trial_id"] == trial_id])
    (folder.trials / ".late-0.parquet.k3j2x9.tmp").write_bytes(b"PAR1 half a file")  # as atomic_write names it
    return folder


def test_prunerlib_report_on_a_running_sweeps_trials_folder_from_any_directory_reads_as_its_results_file(report, tmp_path):
    out_of_file, _ = report
    _running_sweep(tmp_path / "storage", handmade_rows())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "prunerlib.cli", "report", "../storage/handmade/trials", "--out", "out"],
                          capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "out/report.md"
    for name in ("table1", "table2", "table3", "comparison", "all_settings"):
        for suffix in ("md", "csv", "tex"):
            ours, theirs = elsewhere / "out" / f"{name}.{suffix}", out_of_file / f"{name}.{suffix}"
            assert ours.read_text() == theirs.read_text(), ours
    assert "Sweep spec as run (`../storage/handmade/spec.yaml`)" in (elsewhere / "out" / "report.md").read_text()


def test_a_sweep_folder_reads_its_trial_files_and_what_only_its_results_file_still_holds(tmp_path):
    rows = handmade_rows()
    folder = _running_sweep(tmp_path, [r for r in rows if not r["trial_id"].startswith("none-")])
    # results.parquet from an earlier consolidation: a none trial no file holds any more, and an
    # older copy of dist15-0 whose trial file has since been written again
    stale = [r | {"acc_finetuned": 0.10} for r in rows if r["trial_id"] == "dist15-0"]
    write_results(folder.results, [r for r in rows if r["trial_id"].startswith("none-")] + stale)
    loaded = load_results([folder.root])
    assert len(loaded.frame) == len(rows) and loaded.duplicates == 0
    assert sorted(loaded.frame["trial_id"].unique()) == sorted({r["trial_id"] for r in rows})
    dist = loaded.frame[loaded.frame["trial_id"].eq("dist15-0")]
    assert dist["acc_finetuned"].tolist() == [0.80]
    assert loaded.frame.equals(load_results([write_results(tmp_path / "all.parquet", rows)]).frame
                               .sort_values(["trial_id", "cycle"]).reset_index(drop=True))


def test_a_sweep_with_no_finished_trial_yet_is_one_line(tmp_path, capsys):
    folder = SweepFolder(tmp_path, "fresh")
    folder.trials.mkdir(parents=True)
    (folder.trials / ".a.parquet.x1.tmp").write_bytes(b"")
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(folder.root), "--out", str(tmp_path / "out")])
    with pytest.raises(ResultsError, match=f"^{folder.root}: no result files in this folder"):
        run_report(args)
    assert report_main([str(folder.trials), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {folder.trials}: no result files in this folder (a sweep folder's " \
                                      "trials/ fills as its trials finish)\n"
