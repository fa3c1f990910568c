"""A pruner the analysis was never told about (a user's plugin) is grouped, labelled, paired
with its random control and drawn like a built-in one, whether or not the report loaded it."""

import pandas as pd
import pytest

from prunerlib import registry
from prunerlib.analysis.comparison import all_settings_table
from prunerlib.analysis.figures import make_figures, params_removed, points
from prunerlib.analysis.labels import _MORE_STYLES, pruner_label, style
from prunerlib.analysis.pairing import Arms, paired_differences
from prunerlib.analysis.rows import final_ok
from prunerlib.analysis.speed_figure import speed_points
from prunerlib.registry import Setting
from tests.analysis_rows import plugin_rows, timed_rows, write_results
from tests.helpers import registry_without


class LowestL2Units:
    """What examples/custom_pruner.py registers, without its torch: the analysis reads only
    the class's description."""

    name = "lowest_l2_units"
    label = "Lowest-L2 units"
    short = "l2u"
    removes = "units_removed_frac"
    removed_what = "hidden units"
    settings = (Setting("units_frac", float, 0.2, "share of live hidden units removed per cycle", low=0, high=1,
                        open_low=True, open_high=True, label="frac"),)
    companion = False
    control = False


@pytest.fixture(params=["registered", "not loaded"])
def plugin(request):
    """(label, setting label) the report shows: the registry's when the plugin is loaded in the
    report's process; its name and its column's otherwise. (Other tests of the session may have
    loaded the real plugin: it is set aside here, and put back.)"""
    with registry_without("lowest_l2_units"):
        if request.param == "not loaded":
            yield "lowest_l2_units", "units_frac"
            return
        registry.add(LowestL2Units)
        yield "Lowest-L2 units", "frac"


@pytest.fixture
def ok(plugin, tmp_path) -> pd.DataFrame:
    return final_ok(pd.read_parquet(write_results(tmp_path / "r.parquet", timed_rows(plugin_rows()))))


def test_a_plugins_settings_are_rows_of_the_all_settings_table_by_their_label(plugin, ok):
    label, setting = plugin
    shown = all_settings_table(ok).display.set_index(["Pruner", "Setting"])
    for frac, fine in ((0.2, "84.00 ± 1.00"), (0.4, "79.00 ± 1.00")):
        # lr and cycles vary among the handmade trials beside it, so every label names them
        row = shown.loc[("lowest_l2_units", f"{setting} {frac:g}, lr=0.0003, cycles=1")]
        assert (row["n"], row["Fine-tuned acc. (%)"], row["Units removed (%)"]) == ("3", fine, f"{100 * frac:.2f} ± 0.00")
        control = shown.loc[("random (lowest_l2_units)", f"as lowest_l2_units: {setting} {frac:g}, lr=0.0003, cycles=1")]
        assert control["n"] == "3"
    assert pruner_label("lowest_l2_units") == label
    # a method, so before the controls whether or not it is loaded
    assert list(shown.index.get_level_values("Pruner")).index("lowest_l2_units") < \
        list(shown.index.get_level_values("Pruner")).index("random (distinctiveness)")


def test_a_plugins_random_control_pairs_only_with_the_setting_it_mirrors(ok):
    method = ok[ok["pruner"].eq("lowest_l2_units") & ok["units_frac"].eq(0.2)]
    arms = Arms.of(ok, method)
    assert len(arms.random) == 3 and all(p.controls["units_frac"].eq(0.2).all() for p in arms.random)
    # 0.83 − 0.80, 0.85 − 0.81, 0.84 − 0.79
    assert paired_differences(arms.random)["diff"].round(6).tolist() == [3.0, 4.0, 5.0]
    assert len(arms.none) == 3


def test_a_plugin_is_drawn_with_its_setting_and_a_style_of_its_own(plugin, ok, tmp_path):
    _, setting = plugin
    drawn = {(p.method, p.random, p.label) for p in points(ok, params_removed)}
    assert {("lowest_l2_units", False, f"{setting} 0.2"), ("lowest_l2_units", True, f"as lowest_l2_units: {setting} 0.2"),
            ("lowest_l2_units", False, f"{setting} 0.4")} <= drawn
    assert style("lowest_l2_units") == _MORE_STYLES[0]
    timed = {(p.method, p.random) for p in speed_points(ok, "measured_speedup")}
    assert {("lowest_l2_units", False), ("lowest_l2_units", True)} <= timed
    figures, skipped = make_figures(ok, tmp_path / "out")
    assert skipped == [] and len(figures) == 4
