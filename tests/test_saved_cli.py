"""`prunerlib evaluate` and `prunerlib export` on models real trials saved: evaluation reproduces
the trial's accuracy, and an export computes the same outputs in a Python without prunerlib."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import prunerlib
from prunerlib import saved, waveform
from prunerlib.cli import main
from prunerlib.config import TrialConfig
from prunerlib.datasets import load_data, stratified_split
from prunerlib.pipeline import Workdirs, run_trial
from tests.helpers import ffn_config


def _trial(tmp, cfg, trial_id):
    dirs = Workdirs(pretrained=tmp / "pre", models=tmp / "models", results=tmp, latency_batch=8)
    final = run_trial(cfg, dirs, trial_id=trial_id, progress=False)[-1]
    assert final["status"] == "ok"
    return tmp / final["model_path"], final


@pytest.fixture(scope="module")
def waveform_model(tmp_path_factory):
    # Units removed (distinctiveness), so the exported network is the compacted one, not the dense.
    cfg = ffn_config(pruner="distinctiveness", angle_cutoff=60.0)
    path, final = _trial(tmp_path_factory.mktemp("wave"), cfg, "wave")
    return cfg, path, final


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory):
    from tests.conftest import CATSDOGS

    if not CATSDOGS.is_dir():
        pytest.skip(f"{CATSDOGS} not found")
    cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": str(CATSDOGS), "train_per_class": 30,
                                 "test_per_class": 15, "epochs_pretrain": 1, "epochs_finetune": 1, "seed": 0,
                                 "pruner": "filters", "filters_frac": 0.5, "filter_criterion": "l1"})
    path, final = _trial(tmp_path_factory.mktemp("cnn"), cfg, "cnn")
    return cfg, path, final


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _line(out, label):
    return next(line for line in out.splitlines() if line.startswith(label))


# --- evaluate ------------------------------------------------------------------------------------
def test_evaluate_reproduces_the_trials_accuracy_and_counts_the_compacted_parameters(waveform_model, capsys):
    cfg, path, final = waveform_model
    code, out, err = _cli(capsys, "evaluate", path, "--device", "cpu", "--latency-batch", "16")
    assert code == 0, err
    accuracy = _line(out, "test accuracy")
    assert f"{final['acc_finetuned']:.6g} on {final['n_test']} examples" in accuracy
    assert "reproduced exactly" in accuracy
    model = prunerlib.load_pruned(path)
    total = sum(p.numel() for p in model.parameters())
    assert total < 40 * 50 + 50 + 50 * 3 + 3  # removed units are gone from the count
    assert f"{total:,} ({final['params_nonzero']:,} non-zero)" in _line(out, "parameters")
    assert f"{path.stat().st_size / 1024:,.1f} KiB" in _line(out, "file size")
    assert "ms at batch 16" in _line(out, "latency") and "ms at batch 1 (cpu, 1 thread" in _line(out, "latency")


def test_evaluate_finds_moved_photos_with_data_and_asks_for_it_when_they_are_gone(cnn_model, tmp_path, capsys):
    cfg, path, final = cnn_model
    code, out, err = _cli(capsys, "evaluate", path, "--device", "cpu", "--dataset", "catsdogs")
    assert code == 0, err
    assert "reproduced exactly" in _line(out, "test accuracy")
    # The photo folder moved: the file's path is stale, the user's --data is used instead.
    payload = torch.load(path, weights_only=True)
    payload["config"]["data"] = str(tmp_path / "moved-away")
    torch.save(payload, tmp_path / "moved.pt")
    code, out, err = _cli(capsys, "evaluate", tmp_path / "moved.pt", "--device", "cpu")
    assert code == 2 and "--data DIR" in err and len(err.strip().splitlines()) == 1 and out == ""
    code, out, err = _cli(capsys, "evaluate", tmp_path / "moved.pt", "--device", "cpu", "--data", cfg.data)
    assert code == 0, err
    assert f"{final['acc_finetuned']:.6g} on {final['n_test']} examples" in _line(out, "test accuracy")
    assert "reproduced exactly" in _line(out, "test accuracy")


def test_evaluate_on_other_data_says_the_accuracy_is_not_the_trials(waveform_model, tmp_path, capsys):
    cfg, path, final = waveform_model
    other = tmp_path / "other.data"
    waveform.write_uci(other, *waveform.generate(900, cfg.attributes, seed=7))
    code, out, err = _cli(capsys, "evaluate", path, "--device", "cpu", "--data", other)
    assert code == 0, err
    accuracy = _line(out, "test accuracy")
    assert "!= the trial's acc_finetuned" in accuracy and f"tested on {final['n_test']} examples" in accuracy


# --- errors: one line, exit 2 ------------------------------------------------------------------
def _broken_files(path, tmp_path):
    raw = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = saved.VERSION + 1
    torch.save(payload, tmp_path / "future.pt")
    return {"missing.pt": "no such model file", "plain.pt": "not a prunerlib pruned-model file",
            "truncated.pt": "not a readable model file", "future.pt": f"format version {saved.VERSION + 1}"}


@pytest.mark.parametrize("command", [["evaluate", "--device", "cpu"], ["export", "--format", "exported"]])
def test_a_missing_plain_truncated_or_future_file_is_one_line_and_exit_2(waveform_model, tmp_path, capsys, command):
    for name, message in _broken_files(waveform_model[1], tmp_path).items():
        code, out, err = _cli(capsys, command[0], tmp_path / name, *command[1:],
                              *(["--out", tmp_path / "x.pt2"] if command[0] == "export" else []))
        assert code == 2 and message in err, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""
    assert not (tmp_path / "x.pt2").exists()


def test_evaluate_refuses_another_dataset_and_missing_data(waveform_model, tmp_path, capsys):
    path = waveform_model[1]
    code, _, err = _cli(capsys, "evaluate", path, "--dataset", "catsdogs")
    assert code == 2 and "--dataset: " in err and "is a waveform model" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "evaluate", path, "--data", tmp_path / "nothing.data")
    assert code == 2 and "--data: " in err and "does not exist" in err


# --- export ------------------------------------------------------------------------------------
# Run where prunerlib cannot be imported: what a user without it has. Feeds the raw inputs through
# the preprocessing the embedded prunerlib.json describes, at batch 1 and whole.
_WITHOUT_PRUNERLIB = textwrap.dedent("""
    import sys
    sys.modules["prunerlib"] = None  # `import prunerlib` now raises ImportError
    import json, torch
    torch.set_num_threads(1)
    fmt, path, raw_path, out = sys.argv[1:]
    meta = {"prunerlib.json": ""}
    if fmt == "torchscript":
        net = torch.jit.load(path, _extra_files=meta)
    else:
        net = torch.export.load(path, extra_files=meta).module()
    info = json.loads(meta["prunerlib.json"])
    p = info["preprocessing"]
    raw = torch.load(raw_path)
    x = (raw.float() * p["scale"] - torch.tensor(p["mean"])) / torch.tensor(p["std"])
    assert list(x.shape[1:]) == info["input_shape"], (x.shape, info["input_shape"])
    with torch.no_grad():
        torch.save({"one": [net(x[i:i + 1]) for i in range(4)], "all": net(x), "info": info}, out)
""")


def _run_exported(tmp_path, fmt, exported, raw):
    torch.save(raw, tmp_path / "raw.pt")
    result = subprocess.run([sys.executable, "-c", _WITHOUT_PRUNERLIB, fmt, str(exported), str(tmp_path / "raw.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(tmp_path / "out.pt")


def _check_same_outputs(model, inputs, got):
    with torch.no_grad():
        whole = model(inputs)
        ones = [model(inputs[i:i + 1]) for i in range(4)]
    assert torch.allclose(got["all"], whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(got["all"].argmax(1), whole.argmax(1))
    for mine, theirs in zip(ones, got["one"]):
        assert theirs.shape == mine.shape and torch.allclose(theirs, mine, rtol=1e-5, atol=1e-6)
        assert torch.equal(theirs.argmax(1), mine.argmax(1))


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_an_exported_waveform_model_runs_without_prunerlib_on_raw_attributes(waveform_model, tmp_path, capsys, fmt):
    cfg, path, final = waveform_model
    out = tmp_path / f"wave.{fmt}"
    code, printed, err = _cli(capsys, "export", path, "--format", fmt, "--out", out)
    assert code == 0, err
    assert str(out) in printed and not list(tmp_path.glob(".*.tmp"))  # written in place, no leftovers
    # Raw attributes as the UCI file holds them: the export's own metadata turns them into inputs.
    x, y = waveform.generate(cfg.n, cfg.attributes, cfg.data_seed)
    _, test = stratified_split(y, cfg.test_frac, cfg.data_seed)
    got = _run_exported(tmp_path, fmt, out, torch.from_numpy(x[test]))
    model, data = prunerlib.load_pruned(path), load_data(cfg)
    _check_same_outputs(model, data.test_x, got)
    assert (got["all"].argmax(1) == data.test_y).float().mean().item() == pytest.approx(final["acc_finetuned"])
    info = got["info"]
    assert info["class_names"] == list(waveform.CLASS_NAMES) and info["input_shape"] == [cfg.attributes]
    assert info["config_hash"] == cfg.config_hash() and "Waveform attributes" in info["preprocessing"]["inputs"]


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_an_exported_cnn_with_half_its_filters_gives_the_loaded_models_outputs(cnn_model, tmp_path, capsys, fmt):
    cfg, path, final = cnn_model
    out = tmp_path / "cnn.bin"
    out.write_bytes(b"an older export")  # replaced, not refused
    assert _cli(capsys, "export", path, "--format", fmt, "--out", out)[0] == 0
    model, data = prunerlib.load_pruned(path), load_data(cfg)
    assert (model.conv1.out_channels, model.conv2.out_channels) == (8, 16)
    pre = model.prunerlib["preprocessing"]
    raw = (data.test_x * pre["std"] + pre["mean"]) / pre["scale"]  # back to 0-255 pixels
    got = _run_exported(tmp_path, fmt, out, raw)
    _check_same_outputs(model, saved.preprocess(raw, pre), got)
    info = got["info"]
    assert info["class_names"] == ["cat", "dog"] and info["input_shape"] == [3, cfg.image_size, cfg.image_size]
    assert torch.tensor(info["preprocessing"]["mean"]).shape == (3, 1, 1)
    assert info["about"]["acc_finetuned"] == final["acc_finetuned"]
    json.dumps(info)  # plain JSON all through


def test_export_refuses_an_unwritable_out_in_one_line(waveform_model, tmp_path, capsys):
    code, _, err = _cli(capsys, "export", waveform_model[1], "--format", "torchscript", "--out", tmp_path)
    assert code == 2 and "--out: " in err and "is a folder" in err
