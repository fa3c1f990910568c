import fcntl
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from prunerlib import pretrained, waveform
from prunerlib.config import TrialConfig
from prunerlib.datasets import load_data
from prunerlib.pipeline import Workdirs, run_trial
from tests.helpers import ffn_config


def copy_photos(source: Path, dest: Path, per_class: int, skip: int = 0) -> Path:
    """A small folder of real photos (cats/, dogs/, no test split) copied out of the shared set."""
    for cls in ("cats", "dogs"):
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for path in sorted((source / "train" / cls).iterdir())[skip: skip + per_class]:
            shutil.copy(path, dest / cls / path.name)
    return dest


def cnn_config(folder: Path, **settings) -> TrialConfig:
    """A CNN trial on a few real photos, small enough for a unit test."""
    return TrialConfig.from_dict({"dataset": "catsdogs", "data": str(folder), "train_per_class": 16,
                                  "test_per_class": 4, "conv_channels": [4, 8], "hidden": 8,
                                  "epochs_pretrain": 1, "epochs_finetune": 1, "patience": 1,
                                  "batch_size": 16, "device": "cpu", **settings})


def test_a_uci_file_rewritten_in_place_is_pretrained_again(tmp_path):
    path = tmp_path / "waveform.data"
    x, y = waveform.generate(400, 21, seed=0)
    waveform.write_uci(path, x, y)
    cfg = ffn_config(data=str(path), attributes=21)
    dirs = Workdirs(tmp_path / "pretrained")
    first = run_trial(cfg, dirs, progress=False)[0]
    assert first["status"] == "ok" and not first["pretrain_reused"] and first["data_fingerprint"]
    assert run_trial(cfg, dirs, progress=False)[0]["pretrain_reused"]  # same bytes: reused

    waveform.write_uci(path, x, np.random.default_rng(1).permutation(y))  # labels shuffled, same path
    shuffled = run_trial(cfg, dirs, progress=False)[0]
    assert not shuffled["pretrain_reused"]
    assert shuffled["data_fingerprint"] != first["data_fingerprint"]
    assert shuffled["pretrain_key"] == first["pretrain_key"]  # the settings did not change, the data did
    # Shuffled labels carry no signal: the model trained on them is not the one trained before.
    assert shuffled["acc_pretrain"] != first["acc_pretrain"]


def test_a_photo_folder_with_a_file_replaced_is_pretrained_again(catsdogs_dir, tmp_path):
    photos = copy_photos(catsdogs_dir, tmp_path / "photos", per_class=20)
    cfg = cnn_config(photos)
    dirs = Workdirs(tmp_path / "pretrained", image_cache=tmp_path / "cache")
    first = run_trial(cfg, dirs, progress=False)[0]
    assert first["status"] == "ok" and not first["pretrain_reused"]
    assert run_trial(cfg, dirs, progress=False)[0]["pretrain_reused"]

    victim = sorted((photos / "cats").iterdir())[0]
    other = sorted((catsdogs_dir / "train" / "cats").iterdir())[-1]
    shutil.copy(other, victim)  # same name, another photo
    replaced = run_trial(cfg, dirs, progress=False)[0]
    assert replaced["status"] == "ok" and not replaced["pretrain_reused"]
    assert replaced["data_fingerprint"] != first["data_fingerprint"]


def test_generated_data_is_keyed_on_its_generator_settings():
    a, b = ffn_config(), ffn_config(data_seed=1)
    assert load_data(a).fingerprint == load_data(a).fingerprint
    assert pretrained.store_key(a, load_data(a).fingerprint) != pretrained.store_key(b, load_data(b).fingerprint)


def test_the_store_key_changes_with_the_format_version(monkeypatch):
    cfg = ffn_config()
    before = pretrained.store_key(cfg, "x")
    monkeypatch.setattr(pretrained, "FORMAT_VERSION", pretrained.FORMAT_VERSION + 1)
    assert pretrained.store_key(cfg, "x") != before


def test_an_entry_carries_checksums_of_its_model_and_metrics(tmp_path):
    run_trial(ffn_config(), Workdirs(tmp_path), progress=False)
    (entry,) = [p.parent for p in tmp_path.glob("*/model.pt")]
    import hashlib

    sums = dict(line.split()[::-1] for line in (entry / "sha256sums").read_text().splitlines())
    for name in ("model.pt", "metrics.json"):
        assert sums[name] == hashlib.sha256((entry / name).read_bytes()).hexdigest()


def test_leftover_temporary_folders_are_cleaned_unless_a_writer_holds_them(tmp_path):
    cfg, busy_cfg = ffn_config(), ffn_config(seed=7)
    key = pretrained.store_key(cfg, load_data(cfg).fingerprint)
    busy = pretrained.store_key(busy_cfg, load_data(busy_cfg).fingerprint)
    dead = tmp_path / f".{key}.x1y2.tmp"
    dead_before = tmp_path / f".{key}-killed"  # named as writers before prunerlib.files named them
    held = tmp_path / f".{busy}.a9b8.tmp"
    for folder in (dead, dead_before, held):
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"half a mod")
    with open(tmp_path / f".{busy}.lock", "w") as lock:  # a live writer of another key
        fcntl.flock(lock, fcntl.LOCK_EX)
        row = run_trial(cfg, Workdirs(tmp_path), progress=False)[0]
        assert row["status"] == "ok"
        assert not dead.exists() and not dead_before.exists() and held.exists()


def test_store_entries_follow_the_umask_not_mkdtemps_0700(tmp_path):
    old = os.umask(0o022)
    try:
        run_trial(ffn_config(), Workdirs(tmp_path), progress=False)
    finally:
        os.umask(old)
    (entry,) = [p.parent for p in tmp_path.glob("*/model.pt")]
    assert stat.S_IMODE(entry.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in entry.iterdir()} == {0o644}


def test_the_model_is_loaded_as_weights_only(tmp_path, monkeypatch):
    cfg = ffn_config()
    run_trial(cfg, Workdirs(tmp_path), progress=False)
    seen = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("weights_only")) or real(*a, **k))
    assert run_trial(cfg, Workdirs(tmp_path), progress=False)[0]["pretrain_reused"]
    assert seen == [True]


@pytest.mark.fake_cuda
def test_a_cpu_and_a_cuda_trial_of_one_configuration_each_pretrain_their_own_model(tmp_path):
    from tests.fake_cuda import fake_cuda

    cfg = ffn_config(epochs_finetune=1)
    cpu = run_trial(cfg.replace(device="cpu"), Workdirs(tmp_path), progress=False)[0]
    with fake_cuda():
        gpu = run_trial(cfg.replace(device="cuda"), Workdirs(tmp_path), progress=False)[0]
        again = run_trial(cfg.replace(device="cuda"), Workdirs(tmp_path), progress=False)[0]
    assert [r["status"] for r in (cpu, gpu, again)] == ["ok"] * 3
    assert not cpu["pretrain_reused"] and not gpu["pretrain_reused"] and again["pretrain_reused"]
    entries = sorted(json.loads(p.read_text())["device_type"] for p in tmp_path.glob("*/config.json"))
    assert entries == ["cpu", "cuda"]
    fp = cpu["data_fingerprint"]
    assert pretrained.store_key(cfg, fp, "cuda:0") == pretrained.store_key(cfg, fp, "cuda:1") != \
        pretrained.store_key(cfg, fp, "cpu")


def test_running_out_of_memory_while_loading_is_the_machines_fault_not_a_damaged_entry(tmp_path, monkeypatch):
    cfg = ffn_config(pruner="none")
    run_trial(cfg, Workdirs(tmp_path), progress=False)
    entries = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(pretrained.torch, "load", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        run_trial(cfg, Workdirs(tmp_path), progress=False)
    # Not "repaired": the entry is still there, to be loaded once memory allows.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == entries
