"""Table arithmetic against numbers worked out by hand from tests/analysis_rows.py."""

import math

import pandas as pd
import pytest

from prunerlib.analysis.comparison import (Difference, Family, all_settings_table, claim_sentence, comparison_family,
                                          comparison_table)
from prunerlib.analysis.labels import fmt_ci, fmt_stats
from prunerlib.analysis.pairing import pair
from prunerlib.analysis.render import build_tables, latex_escape, to_latex, to_markdown
from prunerlib.analysis.rows import MissingData
from prunerlib.analysis.stats import Stats, holm, t_quantile, t_two_sided_p, wilson
from prunerlib.analysis.tables import table1, table2, table3
from tests.analysis_rows import handmade_rows, write_results

T_2 = 4.302653  # t(0.975, 2 df), from a printed t table
T_1 = 12.706205  # t(0.975, 1 df)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> pd.DataFrame:
    # Through Parquet, so the tests see the dtypes (nullable ints, object bools) a real file has.
    return pd.read_parquet(write_results(tmp_path_factory.mktemp("r") / "results.parquet"))


def row(table, **lead) -> pd.Series:
    data = table.data
    mask = pd.Series(True, index=data.index)
    for name, value in lead.items():
        mask &= data[name].eq(value)
    assert mask.sum() == 1, (lead, data[list(lead)])
    return data[mask].iloc[0]


@pytest.mark.parametrize("df, expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157),
                                          (29, 2.045230), (100, 1.983972)])
def test_t_quantile_matches_printed_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)


def test_t_quantile_other_levels_and_bad_input():
    assert t_quantile(0.95, 10) == pytest.approx(1.812461, abs=1e-5)
    assert t_quantile(0.995, 5) == pytest.approx(4.032143, abs=1e-5)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


# Upper tails P(T > t), from the regularised incomplete beta function I_{df/(df+t²)}(df/2, 1/2) / 2
# evaluated by mpmath at 30 digits (an independent method from the series in tables.py).
@pytest.mark.parametrize("t, df, upper", [(2.0, 10, 0.0366940173854), (3.0, 5, 0.0150496239487),
                                          (0.5, 3, 0.325723982424), (4.0, 2, 0.028595479209), (1.0, 1, 0.25),
                                          (2.5, 29, 0.00916267216921), (6.0, 4, 0.00194126852348)])
def test_two_sided_t_p_values_match_the_incomplete_beta_function(t, df, upper):
    assert t_two_sided_p(t, df) == pytest.approx(2 * upper, rel=1e-9)
    assert t_two_sided_p(-t, df) == pytest.approx(2 * upper, rel=1e-9)


def test_two_sided_t_p_values_invert_t_quantile():
    assert t_two_sided_p(0.0, 7) == 1.0
    assert t_two_sided_p(t_quantile(0.975, 4), 4) == pytest.approx(0.05, abs=1e-12)


def test_holm_adjusts_step_down_and_keeps_order():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_paired_p_value_is_the_two_sided_t_test():
    # −1, +1, +4: t = (4/3) / (sd/√3); with 2 df, P(|T| ≤ t) = t / √(t² + 2) exactly
    t = (4 / 3) / (math.sqrt(114 / 18) / math.sqrt(3))
    assert Difference("none", pd.Series([-1.0, 1.0, 4.0])).p == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert math.isnan(Difference("none", pd.Series([4.0])).p)
    # two seeds 0.2 points apart from their controls both times: accuracies move in steps of 0.1, so such
    # ties are common; zero spread is no evidence of a sure difference, and there is no t test
    assert math.isnan(Difference("none", pd.Series([84.3 - 84.5, 84.4 - 84.6])).p)
    assert math.isnan(Difference("none", pd.Series([0.0, 0.0])).p)


def test_stats_mean_sample_std_and_ci():
    stats = Stats.of([80, 84, 86])
    # mean 250/3; deviations −10/3, 2/3, 8/3 → sum of squares 168/9, over n − 1 = 2
    assert stats.n == 3 and stats.mean == pytest.approx(250 / 3)
    assert stats.std == pytest.approx(math.sqrt(84 / 9))
    half = T_2 * math.sqrt(84 / 9) / math.sqrt(3)
    low, high = stats.ci()
    assert low == pytest.approx(250 / 3 - half, abs=1e-4) and high == pytest.approx(250 / 3 + half, abs=1e-4)


def test_one_value_has_no_std_and_no_ci():
    stats = Stats.of([85.0, float("nan")])
    assert stats.n == 1 and stats.mean == 85.0 and math.isnan(stats.std) and stats.ci() is None
    assert fmt_ci(stats) == "n=1, no CI" and fmt_stats(stats) == "85.00 (n=1)"


def test_table1_cells_and_controls(results):
    table = table1(results)
    fine = row(table, **{"Attr.": 40, "Stage": "fine-tune", "Method": "Distinctiveness"})
    assert fine["n"] == 3 and fine["mean"] == pytest.approx(250 / 3) and fine["std"] == pytest.approx(math.sqrt(84 / 9))
    assert fine["paper"] == 85.83 and fine["diff"] == pytest.approx(250 / 3 - 85.83)
    # none on the same seeds: 81, 83, 82 (the lr 1e-3 control trains differently and stays out)
    assert (fine["none_n"], fine["none_mean"], fine["none_std"]) == (3, pytest.approx(82.0), pytest.approx(1.0))
    # random mirroring 15°: 79, 80, 78 (the one mirroring 25° stays out)
    assert (fine["random_n"], fine["random_mean"], fine["random_std"]) == (3, pytest.approx(79.0), pytest.approx(1.0))
    pre = row(table, **{"Attr.": 40, "Stage": "pretrain", "Method": "Distinctiveness"})
    assert pre["mean"] == pytest.approx(82.0) and pre["std"] == pytest.approx(1.0)
    assert pre["diff"] == pytest.approx(82.0 - 82.70)
    # threshold: one successful trial (the failed one and the non-final cycle are left out)
    thr = row(table, **{"Attr.": 40, "Stage": "fine-tune", "Method": "Threshold"})
    assert thr["n"] == 1 and thr["mean"] == pytest.approx(85.0) and math.isnan(thr["std"])
    assert thr["random_n"] == 0
    tree = row(table, **{"Attr.": 40, "Stage": "pretrain", "Method": "Decision tree (published)"})
    assert tree["paper"] == 80.5 and tree["n"] == 0 and "published" in tree["status"]
    assert row(table, **{"Attr.": 21, "Stage": "fine-tune", "Method": "Threshold"})["status"] == "no rows"
    assert any("21 attributes, pruner threshold" in note for note in table.notes)


def test_table1_display_text(results):
    text = to_markdown(table1(results))
    assert ("| 40 | fine-tune | Distinctiveness | 15° | 83.33 ± 3.06 (n=3) | 85.83 | −2.50 | 82.00 ± 1.00 (n=3) | "
            "79.00 ± 1.00 (n=3) |") in text
    assert "85.00 (n=1)" in text and "not run: published figure" in text


def test_table2_removed_shares(results):
    table = table2(results)
    dist = row(table, **{"Attr.": 40, "Method": "Distinctiveness"})
    assert dist["mean"] == pytest.approx(16.0) and dist["std"] == pytest.approx(2.0)
    assert dist["diff"] == pytest.approx(0.0)
    assert dist["none_mean"] == 0.0 and dist["random_mean"] == pytest.approx(16.0)
    thr = row(table, **{"Attr.": 40, "Method": "Threshold"})
    assert thr["mean"] == pytest.approx(75.0) and thr["paper"] == 45.0  # weights, after 2 cycles


def test_table3_cnn_cells(results):
    table = table3(results)
    acc = row(table, Quantity="Test accuracy", Method="Dist. Model")
    assert acc["n"] == 2 and acc["mean"] == pytest.approx(68.0) and acc["std"] == pytest.approx(math.sqrt(8))
    assert acc["diff"] == pytest.approx(3.0) and acc["none_mean"] == pytest.approx(67.5)
    linear = row(table, Quantity="Removed in the linear layer", Method="Dist. Model")
    assert linear["mean"] == pytest.approx(25.0) and linear["std"] == pytest.approx(math.sqrt(50))
    assert linear["paper"] == 23.51
    filters = row(table, Quantity="Conv filters removed", Method="Dist. Model")
    assert filters["mean"] == pytest.approx(50.0) and filters["diff"] == pytest.approx(50.0 - 43.12)
    assert row(table, Quantity="Test accuracy", Method="Threshold Model")["status"] == "no rows"
    vgg = row(table, Quantity="Test accuracy", Method="VGG16 (published)")
    assert vgg["paper"] == 85.76 and "not run" in vgg["status"] and "pretrained VGG16 weights" in vgg["status"]
    assert any("copying error" in note for note in table.notes)


def test_paired_differences_and_cis(results):
    table = comparison_table(results)
    data = table.data
    dist = data[data["Row"].str.startswith("40 attr., Distinctiveness")].set_index("Comparison")
    assert len(dist) == 3
    within, none, rand = (dist.loc[dist.index.str.startswith(prefix)].iloc[0]
                          for prefix in ("fine-tuned − pretrained", "method − none", "method − random"))
    # fine-tuned − pretrained: 80−82, 84−83, 86−81 = −2, +1, +5
    assert within["mean"] == pytest.approx(4 / 3) and within["paper"] == pytest.approx(85.83 - 82.70)
    # against none: 80−81, 84−83, 86−82 = −1, +1, +4; sd² = (49 + 1 + 64) / 9 / 2
    sd = math.sqrt(114 / 18)
    assert none["n"] == 3 and none["mean"] == pytest.approx(4 / 3) and none["std"] == pytest.approx(sd)
    assert none["ci_low"] == pytest.approx(4 / 3 - T_2 * sd / math.sqrt(3), abs=1e-4)
    assert none["ci_high"] == pytest.approx(4 / 3 + T_2 * sd / math.sqrt(3), abs=1e-4)
    assert none["verdict"] == "not supported"
    # against random at 15°: 80−79, 84−80, 86−78 = 1, 4, 8; sd² = (100 + 1 + 121) / 9 / 2
    sd = math.sqrt(222 / 18)
    assert rand["mean"] == pytest.approx(13 / 3) and rand["std"] == pytest.approx(sd)
    assert rand["ci_high"] == pytest.approx(13 / 3 + T_2 * sd / math.sqrt(3), abs=1e-4)


def test_one_pair_has_no_ci_and_a_budget_mismatch_is_reported(results):
    data = comparison_table(results).data
    thr = data[data["Row"].str.startswith("40 attr., Threshold") & data["Comparison"].str.startswith("method − none")]
    thr = thr.iloc[0]
    assert thr["n"] == 1 and thr["mean"] == pytest.approx(4.0) and math.isnan(thr["ci_low"])
    assert thr["verdict"] == "n=1, not tested"
    assert thr["budget_mismatches"] == 1  # 2 cycles × 30 fine-tune epochs against the control's 30


def test_cnn_pair_uses_t_with_one_degree_of_freedom(results):
    data = comparison_table(results).data
    cnn = data[data["Row"].str.startswith("Dist. Model") & data["Comparison"].str.startswith("method − none")].iloc[0]
    # 70−69, 66−66 = 1, 0: mean 0.5, sd √0.5, half-width t(0.975, 1)·sd/√2
    assert cnn["mean"] == pytest.approx(0.5)
    assert cnn["ci_low"] == pytest.approx(0.5 - T_1 * math.sqrt(0.5) / math.sqrt(2), abs=1e-4)


def test_pairing_needs_the_same_seed_data_and_training(results):
    ok = results[results["final"].eq(True) & results["status"].eq("ok")]
    method = ok[ok["trial_id"].eq("dist15-0")]
    [only] = pair(method, ok[ok["pruner"].eq("none")])
    assert list(only.controls["trial_id"]) == ["none-0"] and only.same_budget is True


def test_claim_sentences_say_whether_pruning_helps():
    def sentence(values):
        diffs = [Difference("pretrained", pd.Series([3.0, 3.1, 2.9]), 3.13, trials=("a",)),
                 Difference("none", pd.Series(values), trials=("a",)),
                 Difference("random", pd.Series([], dtype=float), trials=("a",))]
        return claim_sentence("row", diffs, Family.of(diffs))

    assert "**holds**: supported after Holm correction over 2 comparisons" in sentence([2.0, 2.5, 3.0])
    assert "**does not hold**" in sentence([-2.0, -2.5, -3.0])
    assert "**not supported** after Holm correction over 2 comparisons" in sentence([-1.0, 1.0, 4.0])
    assert "cannot be judged" in sentence([4.0])
    assert "cannot be judged" in sentence([-0.2, -0.2]) and "**does not hold**" not in sentence([-0.2, -0.2])
    assert "cannot be judged" in sentence([])


def test_one_gain_among_many_null_comparisons_is_not_supported_after_holm():
    # +1.1 pp over 5 seeds, p ≈ 0.03 alone: its 95% CI excludes 0, as one in ~30 null rows' would by chance
    gain = [Difference("pretrained", pd.Series([0.1, -0.2, 0.0, 0.3, -0.1]), trials=("a",)),
            Difference("none", pd.Series([1.0, 2.0, 1.0, 1.5, 0.0]), trials=("a",)),
            Difference("random", pd.Series([], dtype=float), trials=("a",))]
    assert gain[1].stats.ci()[0] > 0 and 0.025 < gain[1].p < 0.035
    nulls = [Difference("none", pd.Series([1.0, -1.0, 0.5, -0.5, 0.2 * k]), trials=(f"n{k}",)) for k in range(28)]
    family = Family.of([*gain, *nulls])
    assert family.size == 30 and family.adjusted(gain[1]) == pytest.approx(30 * gain[1].p)
    text = claim_sentence("row", gain, family)
    assert "**not supported** after Holm correction over 30 comparisons" in text and "**holds**" not in text


def test_the_family_is_every_paired_comparison_in_the_report_once(results):
    family = comparison_family(results)
    # comparison table: 40 attr. distinctiveness against pretrained / none / random (n=3), Dist. Model against
    # pretrained / none (n=2); all settings adds random 15° and random 25° against none (n=3). The threshold
    # row has one seed and no test; the distinctiveness settings' Δ vs none is the comparison table's, once.
    assert family.size == 7
    table = comparison_table(results)
    data = table.data
    dist = data[data["Row"].str.startswith("40 attr., Distinctiveness")
                & data["Comparison"].str.startswith("method − none")].iloc[0]
    t = (4 / 3) / (math.sqrt(114 / 18) / math.sqrt(3))
    assert dist["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2)) and dist["p_holm"] >= dist["p"]
    assert dist["verdict"] == "not supported"
    thr = data[data["Row"].str.startswith("40 attr., Threshold") & data["Comparison"].str.startswith("method − none")]
    assert math.isnan(thr.iloc[0]["p_holm"])
    assert any("Holm" in note and "7 paired comparisons" in note for note in table.notes)
    assert "p (Holm)" in table.display.columns
    settings = all_settings_table(results).data
    assert settings.loc[settings["Pruner"].eq("distinctiveness") & settings["Data"].str.startswith("Waveform"),
                        "delta_none_p_holm"].iloc[0] == pytest.approx(dist["p_holm"])


def test_all_settings_lists_every_setting_with_its_paired_difference(results):
    data = all_settings_table(results).data
    assert len(data) == 8  # waveform: dist 15°, threshold, random 15°, random 25°, none, none lr 1e-3; cnn: 2
    dist = data[data["Pruner"].eq("distinctiveness") & data["Data"].str.startswith("Waveform")].iloc[0]
    assert dist["delta_none_mean"] == pytest.approx(4 / 3)
    assert dist["delta_none_ci_low"] == pytest.approx(4 / 3 - T_2 * math.sqrt(114 / 18) / math.sqrt(3), abs=1e-4)


def test_a_missing_column_skips_only_the_tables_that_need_it(results):
    tables, skipped = build_tables(results.drop(columns=["angle_cutoff"]))
    assert {t.name for t in tables} == {"all_settings"}
    assert any(m.startswith("Table 1") and "angle_cutoff" in m for m in skipped)
    assert any(m.startswith("Table 3") and "angle_cutoff" in m for m in skipped)


def test_a_table_without_rows_says_what_it_wanted(results):
    waveform_only = results[results["dataset"].eq("waveform")]
    with pytest.raises(MissingData, match="Table 3: no final ok rows for Dogs vs. Cats"):
        table3(waveform_only)


def test_latex_is_escaped():
    assert latex_escape("83.33 ± 3.06 (n=3), mean_abs 50% −1") == r"83.33 $\pm$ 3.06 (n=3), mean\_abs 50\% $-$1"


def test_latex_table_has_one_row_per_table_row(results):
    table = table2(results)
    tex = to_latex(table)
    assert tex.count(r" \\") == len(table.display) + 1 and r"\toprule" in tex and r"\caption{" in tex


# --------------------------------------------------------------------------- what the intervals cover
def test_wilson_interval_matches_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 and 0/20
    assert wilson(81 / 263, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(0.0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)


def _coverage_notes(table) -> list[str]:
    return [note for note in table.notes if "cover" in note]


def test_with_a_fixed_split_the_tables_say_the_intervals_cover_training_seeds_only(results):
    table = table1(results)
    fine = row(table, **{"Attr.": 40, "Stage": "fine-tune", "Method": "Distinctiveness"})
    # all three seeds tested on the same 1000 examples: 83.33% ± 1.96·√(p(1−p)/1000) ≈ ± 2.3 points
    assert fine["covers"] == "training seed only" and fine["n_test"] == 1000
    assert (fine["test_low"], fine["test_high"]) == pytest.approx([100 * x for x in wilson(250 / 300, 1000)])
    assert fine["test_high"] - fine["test_low"] == pytest.approx(2 * 2.31, abs=0.05)
    shown = table.display.loc[(table.data["Stage"].eq("fine-tune") & table.data["Method"].eq("Distinctiveness")
                               & table.data["Attr."].eq(40)).to_numpy()].iloc[0]
    assert shown["Test sample, 95% (Wilson)"] == f"[{fine['test_low']:.2f}, {fine['test_high']:.2f}]"
    cnn = row(table3(results), Quantity="Test accuracy", Method="Dist. Model")
    assert cnn["n_test"] == 400 and cnn["test_high"] - cnn["test_low"] == pytest.approx(2 * 4.55, abs=0.1)
    for table in (table1(results), table2(results), table3(results), comparison_table(results),
                  all_settings_table(results)):
        [note] = _coverage_notes(table)
        assert "training seed only" in note and "data_seed" in note, (table.name, note)
    [note] = _coverage_notes(comparison_table(results))
    assert "not in them" in note


def test_when_the_split_varies_with_the_seed_the_intervals_cover_it(tmp_path):
    per_seed = [r | {"data_seed": r["seed"]} for r in handmade_rows()]  # what `data_seed: per_seed` writes
    frame = pd.read_parquet(write_results(tmp_path / "r.parquet", per_seed))
    table = table1(frame)
    fine = row(table, **{"Attr.": 40, "Stage": "fine-tune", "Method": "Distinctiveness"})
    assert fine["covers"] == "training seed and data split" and math.isnan(fine["test_low"])
    assert fine["none_n"] == 3  # controls still pair: the same seed is the same split
    shown = table.display.loc[(table.data["Stage"].eq("fine-tune") & table.data["Method"].eq("Distinctiveness")
                               & table.data["Attr."].eq(40)).to_numpy()].iloc[0]
    assert shown["Test sample, 95% (Wilson)"] == "in ±"
    for table in (table1(frame), comparison_table(frame), all_settings_table(frame)):
        [note] = _coverage_notes(table)
        assert "training seed and data split" in note and "training seed only" not in note, note
        assert "noise is in them" in note and "not in them" not in note, note


def test_without_an_n_test_column_the_test_sample_interval_is_unknown(tmp_path):
    frame = pd.read_parquet(write_results(tmp_path / "r.parquet", drop=("n_test",)))
    table = table1(frame)
    fine = row(table, **{"Attr.": 40, "Stage": "fine-tune", "Method": "Distinctiveness"})
    assert fine["covers"] == "training seed only" and math.isnan(fine["test_low"])
    assert "n_test unknown" in set(table.display["Test sample, 95% (Wilson)"])
    for table in (table1(frame), comparison_table(frame), all_settings_table(frame)):
        [note] = _coverage_notes(table)
        assert "n_test" in note and "unknown" in note, note
