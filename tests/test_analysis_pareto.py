from pathlib import Path

import pandas as pd
import pytest

from prunerlib.analysis.command import figures_main
from prunerlib.analysis.figures import Point, front_of, make_figures, params_removed, pareto_front
from prunerlib.analysis.stats import Stats
from tests.analysis_rows import timed_rows, write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_keeps_only_undominated_points():
    xs = [0, 15, 40, 45, 80, 20]
    ys = [85, 85.5, 84, 84.5, 80, 83]
    # (0, 85) loses to (15, 85.5); (40, 84) and (20, 83) lose to (45, 84.5)
    assert pareto_front(xs, ys) == [1, 3, 4]


def test_the_figures_front_is_chosen_on_validation_accuracy_not_on_the_test_accuracy_shown():
    def point(removed, test, val):
        return Point("threshold", False, f"{removed}", Stats.of(pd.Series([removed])), Stats.of(pd.Series([test])), val)

    pts = [point(10, 80, 85), point(20, 90, 80), point(30, 85, 86)]
    # On test accuracy the 20% setting (90%) would be on the front; on validation the 30%
    # setting is both sparser and more accurate than every other.
    assert pareto_front([10, 20, 30], [80, 90, 85]) == [1, 2]
    assert front_of(pts) == [2]


def test_pareto_front_of_ties_keeps_one():
    assert pareto_front([10, 10, 5], [80, 80, 80]) == [0]


def test_params_removed_falls_back_on_the_compression_ratio():
    rows = pd.DataFrame({"params_total": [1000, 1000], "params_nonzero": [600, None], "compression_ratio": [None, 2.0]})
    assert params_removed(rows).tolist() == pytest.approx([40.0, 50.0])


def test_every_figure_is_a_non_empty_png(tmp_path):
    df = pd.read_parquet(write_results(tmp_path / "r.parquet", timed_rows()))
    figures, skipped = make_figures(df, tmp_path / "out")
    assert skipped == []
    assert [f.name for f in figures] == ["accuracy_vs_removed", "accuracy_vs_speedup", "accuracy_per_cycle",
                                         "measured_vs_theoretical"]
    for figure in figures:
        data = figure.path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000 and figure.caption


def test_per_cycle_figure_is_skipped_with_a_reason_when_every_trial_ran_one_cycle(tmp_path):
    one_cycle = [r for r in timed_rows() if not r["trial_id"].startswith("thr-0")]
    df = pd.read_parquet(write_results(tmp_path / "r.parquet", one_cycle))
    figures, skipped = make_figures(df, tmp_path / "out")
    assert [f.name for f in figures] == ["accuracy_vs_removed", "accuracy_vs_speedup", "measured_vs_theoretical"]
    assert skipped == ["figure accuracy_per_cycle: no successful trial ran more than one pruning cycle"]


def test_a_missing_column_skips_only_its_figure(tmp_path, capsys):
    results = write_results(tmp_path / "r.parquet", drop=("theoretical_speedup",))
    assert figures_main([str(results), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "accuracy_vs_speedup: the results have no column(s) theoretical_speedup" in err
    assert sorted(Path(line).name for line in out.split()) == ["accuracy_per_cycle.png", "accuracy_vs_removed.png"]

