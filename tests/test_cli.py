import subprocess
import sys

import pandas as pd
import pytest

from prunerlib import waveform


def prunerlib(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunerlib.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, named", [
    (["run", "--angle-cutoff", "120"], "angle_cutoff"),
    (["run", "--no-such-flag"], "--no-such-flag"),
    (["run", "--lr", "fast"], "--lr"),
    (["run", "--dataset", "catsdogs", "--data", "{tmp}", "--pruner", "filters", "--filters-pruned", "99"],
     "filters_pruned"),
    (["run", "--dataset", "catsdogs", "--data", "{tmp}/missing"], "does not exist"),
    (["run", "--data", "{tmp}/missing.data"], "does not exist"),
    (["run", "--set", "pruner=magic"], "pruner"),
    (["run", "--set", "nonsense"], "--set"),
    (["run", "--config", "{tmp}/nope.yaml"], "config"),
    (["run", "--dataset", "catsdogs", "--data", "{tmp}"], "no recognisable"),
    (["run", "--set", "angle_cutoff=.nan"], "angle_cutoff: must be a finite number"),
    (["run", "--set", "threshold_factor=.inf"], "threshold_factor: must be a finite number"),
    (["run", "--set", "max_acc_drop=.nan"], "max_acc_drop: must be a finite number"),
    (["run", "--set", "data_seed=-3"], "data_seed"),
    (["run", "--set", "val_frac=0", "--set", "pretrain_stop=fixed"], "val_frac"),
    (["run", "--set", "seed=[1, 2"], "--set seed: not valid YAML"),
    (["run", "--set", 'seed=!!python/object/apply:os.system ["id"]'], "--set seed: not valid YAML"),
    (["run", "--save-models", "best"], "--save-models"),
    (["run", "--devic", "cpu"], "--devic"),  # no prefix matching: an abbreviation is not a flag
    (["run", "--epochs", "3"], "--epochs"),  # ambiguous too: never guessed
    (["run", "--latency-batch", "0"], "--latency-batch"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, args, named):
    result = prunerlib(*[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any work


@pytest.mark.parametrize("override", ["seed=[1, 2", 'fixed=!!python/object/apply:os.system ["id"]'])
def test_a_sweep_set_that_is_not_yaml_is_one_line_and_exit_2(tmp_path, override):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\ngrid: [{pruner: none}]\n")
    result = prunerlib("sweep", str(spec), "--set", override, "--dry-run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not valid YAML" in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_run_appends_rows_and_config_file_and_set_override(tmp_path):
    config = tmp_path / "trial.yaml"
    config.write_text("pruner: threshold\nthreshold_factor: 0.5\nn: 600\nepochs_pretrain: 3\nepochs_finetune: 1\n")
    out = tmp_path / "results.parquet"
    for _ in range(2):
        result = prunerlib("run", "--config", str(config), "--threshold-factor", "0.8", "--set", "seed=3",
                           "--out", str(out), "--workdir", str(tmp_path / "w"), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "fine-tuned 1" in result.stdout and "pretrain" in result.stdout
    df = pd.read_parquet(out)
    assert len(df) == 2 and df["threshold_factor"].tolist() == [0.8, 0.8] and df["seed"].tolist() == [3, 3]
    assert df["pretrain_reused"].tolist() == [False, True]


def test_default_output_lands_under_runs_with_the_model_beside_it_and_its_latency(tmp_path):
    result = prunerlib("run", "--set", "n=300", "--epochs-pretrain", "2", "--epochs-finetune", "1", "--quiet",
                       "--pruner", "threshold", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = pd.read_parquet(tmp_path / "runs" / "results.parquet").iloc[-1]
    assert row["model_path"].startswith("models/") and (tmp_path / "runs" / row["model_path"]).is_file()
    assert row["latency_batch"] == 256 and row["latency_ms_pruned_b1"] > 0


def test_run_keeps_no_model_and_times_nothing_when_told_not_to(tmp_path):
    out = tmp_path / "elsewhere" / "r.parquet"
    result = prunerlib("run", "--set", "n=300", "--epochs-pretrain", "2", "--epochs-finetune", "1", "--quiet",
                       "--save-models", "none", "--no-measure-latency", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = pd.read_parquet(out).iloc[-1]
    assert pd.isna(row["model_path"]) and pd.isna(row["latency_ms_dense"]) and not (tmp_path / "runs" / "models").exists()


def test_a_models_path_is_relative_to_the_results_file_wherever_the_workdir_is(tmp_path):
    out = tmp_path / "results" / "r.parquet"
    result = prunerlib("run", "--set", "n=300", "--epochs-pretrain", "2", "--epochs-finetune", "1", "--quiet",
                       "--no-measure-latency", "--out", str(out), "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = pd.read_parquet(out).iloc[-1]["model_path"]
    assert path.startswith("../work/models/") and (out.parent / path).is_file()


def test_data_waveform_writes_the_uci_format(tmp_path):
    out = tmp_path / "waveform-+noise.data"
    result = prunerlib("data", "waveform", "--attributes", "40", "--n", "200", "--seed", "0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 200 and all(len(line.split(",")) == 41 for line in lines)
    x, y = waveform.read_uci(out)
    gx, gy = waveform.generate(200, 40, seed=0)
    assert (y == gy).all() and abs(x - gx).max() <= 0.005 + 1e-6


def test_run_reads_a_uci_file(tmp_path):
    data = tmp_path / "waveform.data"
    assert prunerlib("data", "waveform", "--attributes", "21", "--n", "400", "--out", str(data)).returncode == 0
    result = prunerlib("run", "--data", str(data), "--attributes", "21", "--epochs-pretrain", "2",
                       "--epochs-finetune", "1", "--quiet", "--out", str(tmp_path / "r.parquet"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert pd.read_parquet(tmp_path / "r.parquet")["attributes"].tolist() == [21]


def test_version_and_python_dash_m_prunerlib():
    import prunerlib as package

    for command in ([sys.executable, "-m", "prunerlib", "--version"], [sys.executable, "-m", "prunerlib.cli", "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip() == f"prunerlib {package.__version__}", result


def test_help_shows_every_settings_default_and_choices():
    text = prunerlib("run", "--help").stdout
    flat = " ".join(text.split())
    for shown in ("--threshold-factor FLOAT mask", "(default: 1.0)", "--optimizer adam|sgd", "--pruner NAME",
                  "--hidden INT hidden units (default: the dataset's)", "(default: runs/results.parquet)",
                  "--save-models {final,all_cycles,none}", "(default: 16,32)"):
        assert shown in flat, shown
