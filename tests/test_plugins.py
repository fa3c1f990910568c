"""A user's pruner in a file of its own: loaded by `--plugin` or a spec's `plugins:`, it works in
`run`, a sweep on real Ray workers and `prunerlib report` with no other edit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prunerlib import plugins, registry
from prunerlib.errors import ConfigError
from tests.helpers import registry_without

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_pruner.py"
SMALL = ["--attributes", "21", "--n", "600", "--epochs-pretrain", "3", "--epochs-finetune", "1"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunerlib.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.parametrize("source, problem", [
    (None, "is not a file"),
    ("raise RuntimeError('broken on purpose')", "failed to import: RuntimeError: broken on purpose"),
    ("x = 1", "registers no pruner"),
    ("from prunerlib.pruners import Pruner, register\n\n@register\nclass Again(Pruner):\n"
     "    name = 'threshold'\n    label = 'Again'\n    short = 'again'\n", "is already registered"),
    ("from prunerlib.pruners import Pruner, Setting, register\n\n@register\nclass Steals(Pruner):\n"
     "    name = 'steals'\n    label = 'Steals'\n    short = 'st'\n"
     "    settings = (Setting('angle_cutoff', float, 1.0, 'mine now'),)\n", "owned by pruner 'distinctiveness'"),
])
def test_a_plugin_that_cannot_register_a_pruner_is_one_line_naming_it(tmp_path, source, problem):
    path = tmp_path / "mine.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(ConfigError) as err:
        plugins.load([path])
    assert problem in str(err.value) and str(path.name) in str(err.value) and "\n" not in str(err.value)
    assert "steals" not in registry.PRUNERS and registry.PRUNERS["threshold"].__module__.startswith("prunerlib.")


def test_a_plugin_file_runs_once_per_process_however_often_it_is_named(tmp_path):
    path = tmp_path / "counted.py"
    path.write_text("from prunerlib.pruners import Pruner, register\nimport builtins\n"
                    "builtins.counted_runs = getattr(builtins, 'counted_runs', 0) + 1\n\n"
                    "@register\nclass Counted(Pruner):\n    name = 'counted'\n    label = 'Counted'\n    short = 'cnt'\n"
                    "    removes = 'units_removed_frac'\n    removed_what = 'hidden units'\n")
    import builtins

    with registry_without("counted"):  # no trace left for the tests after this one
        assert plugins.load([path]) == ["counted"] and plugins.load([str(path), path]) == ["counted", "counted"]
    assert builtins.counted_runs == 1


def test_loading_a_plugin_changes_no_other_configurations_identity(tmp_path):
    code = ("from prunerlib.config import TrialConfig; import sys; from prunerlib import plugins\n"
            "cfg = {'pruner': 'threshold', 'threshold_factor': 0.5}\n"
            "before = TrialConfig.from_dict(cfg).config_hash()\n"
            f"plugins.load([{str(EXAMPLE)!r}])\n"
            "after = TrialConfig.from_dict(cfg)\n"
            "print(before == after.config_hash(), after.units_frac)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "0.2"]


def test_run_with_a_plugin_by_flag_or_by_set_and_its_random_control(tmp_path):
    out = tmp_path / "rows.parquet"
    for args in (["--pruner", "lowest_l2_units", "--units-frac", "0.2"],
                 ["--pruner", "random", "--match", "lowest_l2_units", "--set", "units_frac=0.2"]):
        result = _cli("run", "--plugin", str(EXAMPLE), *args, *SMALL, "--out", str(out), "--quiet", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    rows = pd.read_parquet(out)
    assert list(rows["pruner"]) == ["lowest_l2_units", "random"] and list(rows["units_frac"]) == [0.2, 0.2]
    # 20% of 50 hidden units, by weight norm and at random alike
    assert list(rows["units_removed_frac"]) == [0.2, 0.2] and (rows["status"] == "ok").all()
    bad = _cli("run", "--plugin", str(EXAMPLE), "--pruner", "lowest_l2_units", "--units-frac", "1.5", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("units_frac: must be in (0, 1), got 1.5")
    missing = _cli("run", "--pruner", "lowest_l2_units", cwd=tmp_path)
    assert missing.returncode == 2 and "--plugin PATH.py" in missing.stderr


def test_a_sweep_with_plugins_runs_them_on_ray_workers_and_reports_them(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "l2.py").write_text(EXAMPLE.read_text())  # the user's file, outside the package
    # A plugin path is relative to the spec file's folder, not to where the sweep is started.
    spec = {"name": "plugged", "plugins": ["../mine/l2.py"],
            "fixed": {"dataset": "waveform", "attributes": 21, "n": 600, "epochs_pretrain": 3, "epochs_finetune": 1},
            "seeds": [0, 1],
            "grid": [{"pruner": "lowest_l2_units", "units_frac": [0.1, 0.3]},
                     {"pruner": "random", "match": "lowest_l2_units", "units_frac": 0.3}]}
    (tmp_path / "specs" / "plugged.yaml").write_text(yaml.safe_dump(spec))
    result = _cli("sweep", "specs/plugged.yaml", "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = pd.read_parquet(tmp_path / "runs" / "plugged" / "results.parquet")
    assert sorted(zip(rows["pruner"], rows["units_frac"], rows["seed"])) == sorted(
        [("lowest_l2_units", f, s) for f in (0.1, 0.3) for s in (0, 1)] + [("random", 0.3, s) for s in (0, 1)])
    assert (rows["status"] == "ok").all()
    assert "random~lowest_l2_units" in result.stdout  # the summary, from the registry's entry
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = _cli("report", str(tmp_path / "runs" / "plugged"), "--out", "report", cwd=elsewhere)
    assert report.returncode == 0, report.stderr
    text = (elsewhere / "report" / "report.md").read_text()
    assert "lowest_l2_units" in text or "Lowest-L2 units" in text


def test_a_sweep_without_plugins_runs_from_a_driver_that_has_one_loaded(tmp_path):
    """The workers of a sweep that names no plugin never load one: the configurations the
    driver sends them must not carry the plugin's settings."""
    spec = {"name": "plain", "fixed": {"dataset": "waveform", "attributes": 21, "n": 600, "epochs_pretrain": 2,
                                       "epochs_finetune": 1}, "seeds": [0], "grid": [{"pruner": "threshold"}]}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(spec))
    driver = (f"import sys; from prunerlib import plugins; from prunerlib.cli import main\n"
              f"plugins.load([{str(EXAMPLE)!r}])\n"
              f"sys.exit(main(['sweep', 'plain.yaml', '--storage', 'runs']))")
    result = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = pd.read_parquet(tmp_path / "runs" / "plain" / "results.parquet")
    assert list(rows["status"]) == ["ok"] and rows["units_frac"].isna().all()
