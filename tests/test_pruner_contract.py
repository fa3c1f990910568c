"""One suite every registered pruner passes, the example plugin included (as Optuna runs one
suite over every sampler): its registry entry is all the rest of prunerlib needs.

TrialConfig → sweep spec → run_trial → a pack beside its random control (each member's saved
model reloaded) → the sweep summary → `prunerlib report`. A new pruner joins this suite by being registered; nothing here names one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from prunerlib import load_pruned, plugins, registry
from prunerlib.cli import main
from prunerlib.config import TrialConfig
from prunerlib.datasets import load_data
from prunerlib.pipeline import Workdirs, run_pack, run_trial
from prunerlib.records import append_parquet, columns
from prunerlib.sweep.plan import config_text, plan_text
from prunerlib.sweep.spec import parse_spec
from prunerlib.sweep.summary import sweep_summary
from prunerlib.training import accuracy
from tests.conftest import CATSDOGS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_pruner.py"
plugins.load([EXAMPLE])

METHODS = [name for name, cls in registry.PRUNERS.items() if not cls.control]
# Pretrained long enough that every method finds something to remove (distinctiveness needs
# units that have learnt alike: none after 10 epochs here, 3 of 50 after 30).
SMALL_FFN = {"dataset": "waveform", "attributes": 21, "n": 600, "epochs_pretrain": 30, "pretrain_stop": "fixed",
             "epochs_finetune": 1}
SMALL_CNN = {"dataset": "catsdogs", "data": str(CATSDOGS), "train_per_class": 24, "test_per_class": 8,
             "image_size": 16, "conv_channels": [4, 6], "hidden": 8, "epochs_pretrain": 2, "epochs_finetune": 1,
             "patience": 2}


def _fixed(name: str) -> dict:
    """The smallest trial this pruner can run on: the FFN where it can, else the CNN."""
    cls = registry.PRUNERS[name]
    if "ffn" in cls.models:
        return dict(SMALL_FFN)
    if not CATSDOGS.is_dir():
        pytest.skip(f"{CATSDOGS} not found: pruner {name} needs the CNN, whose photos live in ../shared")
    # A companion's step runs when one of its settings is set: its first setting's non-default value.
    return {**SMALL_CNN, **({"filters_frac": 0.5} if cls.companion else {})}


def test_the_example_plugin_and_every_built_in_method_are_in_the_suite():
    assert {"distinctiveness", "threshold", "filters", "lowest_l2_units"} <= set(METHODS)


def test_every_pruner_has_a_complete_registry_entry():
    for name, cls in registry.PRUNERS.items():
        assert cls.name == name and cls.label and cls.short, name
        assert cls.removes in (*registry.REMOVED_COLUMNS, None), name
        if not cls.control:
            assert cls.removes and cls.removed_what, f"{name}: a method says what it removes"
        for setting in cls.settings:
            assert setting.help, f"{name}.{setting.name} has no help text"
            assert registry.setting_owner(setting.name) == name
            assert setting.name in columns(), f"{setting.name} is not a result column"


@pytest.mark.parametrize("name", METHODS)
def test_a_pruner_runs_through_config_spec_trial_pack_summary_and_report(name, tmp_path):
    cls = registry.PRUNERS[name]
    fixed = _fixed(name)
    # 1. TrialConfig: every setting it owns is readable, a result column, and set from a dict.
    cfg = TrialConfig.from_dict({**fixed, "pruner": name})
    for setting in cls.settings:
        assert hasattr(cfg, setting.name)
    # 2. A sweep spec that names it and its random control (the plugin from the spec, too).
    spec = parse_spec({"name": f"contract-{name}", "plugins": [str(EXAMPLE)], "fixed": fixed, "seeds": [0],
                       "grid": [{"pruner": name}, {"pruner": "random", "match": name}]})
    method, control = spec.grid
    assert config_text(method).startswith(name) and config_text(control).startswith(f"random~{name}")
    assert "2 trial configuration(s)" in plan_text(spec)
    # 3. A single run: ok rows whose setting columns are the configuration's, and which say
    # how much it removed in the column its entry names.
    (row,) = run_trial(method, Workdirs(tmp_path / "pretrained"), trial_id="single", progress=False)
    assert row["status"] == "ok", row["error"]
    assert row["pruner"] == name and row[cls.removes] > 0
    for setting, value in cls.columns(method).items():
        assert row[setting] == value, setting
    # 4. A pack with its random control: the control removes exactly the method's share.
    keeping = Workdirs(tmp_path / "pretrained", models=tmp_path / "models", results=tmp_path, latency_batch=4)
    packed = run_pack([method, control], keeping, trial_ids=["m", "c"])
    (m_row,), (c_row,) = packed
    assert m_row["status"] == c_row["status"] == "ok", (m_row["error"], c_row["error"])
    assert c_row[cls.removes] == m_row[cls.removes] == row[cls.removes]
    assert c_row["match"] == name
    # Each member's compacted model reloads and scores what the trial scored; both were timed.
    data = load_data(method)
    for member in (m_row, c_row):
        loaded = load_pruned(tmp_path / member["model_path"])
        assert accuracy(loaded, data.test_x, data.test_y) == member["acc_finetuned"]
        assert member["measured_speedup"] > 0 and member["latency_batch"] == 4
    # 5. The sweep summary picks it and its control, by name and removed share.
    frame = pd.DataFrame([{**r, "sweep": spec.name} for r in (m_row, c_row)])
    text = sweep_summary(frame, spec)
    share = f"{100 * m_row[cls.removes]:.1f}%"
    lines = text.splitlines()
    assert any(line.strip().startswith(name) and share in line for line in lines), text
    assert any(line.strip().startswith(f"random~{name}") and share in line for line in lines), text
    # 6. The report shows it under its label.
    results = append_parquet(tmp_path / "results.parquet", [m_row, c_row])
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert cls.label in report or name in report
