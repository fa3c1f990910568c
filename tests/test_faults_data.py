"""Fault injection on the data side: the real files truncated or broken, then the real trial run.

A broken shared artefact (pretrained-store entry, decoded-image cache) is repaired and the
trial ends `ok`; a broken data file is the user's to fix: one line naming the file, exit 2.
"""

import logging

import numpy as np
import pytest

from prunerlib import cli, waveform
from prunerlib.pipeline import Workdirs, run_trial
from tests.helpers import ffn_config
from tests.test_pretrained import cnn_config, copy_photos


def _entry(store):
    (model,) = store.glob("*/model.pt")
    return model.parent


def _warnings(caplog, logger):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("damage", ["truncated model", "broken metrics", "no model"])
def test_a_broken_store_entry_is_pretrained_again_with_one_warning(tmp_path, caplog, damage):
    cfg = ffn_config()
    first = run_trial(cfg, Workdirs(tmp_path), progress=False)[0]
    entry = _entry(tmp_path)
    if damage == "truncated model":
        data = (entry / "model.pt").read_bytes()
        (entry / "model.pt").write_bytes(data[: len(data) // 2])
    elif damage == "broken metrics":
        (entry / "metrics.json").write_text('{"acc_test": 0.9')
    else:  # a copy that lost its model file: the folder exists, the model does not
        (entry / "model.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="prunerlib.pretrained"):
        again = run_trial(cfg, Workdirs(tmp_path), progress=False)[0]
    assert again["status"] == "ok" and again["pretrain_reused"] is False, again["error"]
    assert again["acc_pretrain"] == first["acc_pretrain"]  # retrained from the same seed and data
    (message,) = _warnings(caplog, "prunerlib.pretrained")
    assert str(entry) in message and "\n" not in message
    assert run_trial(cfg, Workdirs(tmp_path), progress=False)[0]["pretrain_reused"]  # repaired for good


def test_a_truncated_image_cache_file_is_decoded_again(catsdogs_dir, tmp_path, caplog):
    photos = copy_photos(catsdogs_dir, tmp_path / "photos", per_class=12)
    cfg = cnn_config(photos, train_per_class=8)
    dirs = Workdirs(tmp_path / "pretrained", image_cache=tmp_path / "cache")
    assert run_trial(cfg, dirs, progress=False)[0]["status"] == "ok"
    (cached,) = (tmp_path / "cache").glob("*.pt")
    whole = cached.read_bytes()
    cached.write_bytes(whole[: len(whole) // 3])
    with caplog.at_level(logging.WARNING, logger="prunerlib.images"):
        row = run_trial(cfg, dirs, progress=False)[0]
    assert row["status"] == "ok", row["error"]
    assert row["pretrain_reused"]  # the same photos decode to the same data
    (message,) = _warnings(caplog, "prunerlib.images")
    assert str(cached) in message and "\n" not in message
    assert len(cached.read_bytes()) == len(whole)  # rebuilt


def test_an_unwritable_image_cache_is_skipped_with_one_warning(catsdogs_dir, tmp_path, monkeypatch, caplog):
    # Tests run as root, for whom chmod does not stop a write. A cache path under a regular
    # file cannot be created by anyone (mkdir fails with ENOTDIR), root included.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder's parent should be")
    monkeypatch.setenv("PRUNERLIB_CACHE", str(blocker / "cache"))
    photos = copy_photos(catsdogs_dir, tmp_path / "photos", per_class=12)
    cfg = cnn_config(photos, train_per_class=8)
    with caplog.at_level(logging.WARNING, logger="prunerlib.images"):
        rows = [run_trial(cfg.replace(seed=s), Workdirs(tmp_path / "pretrained"), progress=False)[0]
                for s in (0, 1)]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows[0]["error"]
    (message,) = _warnings(caplog, "prunerlib.images")  # once, not once per trial
    assert str(blocker / "cache") in message and "\n" not in message
    assert blocker.read_text().startswith("a file")


def _uci(path, x, y, edit=None):
    waveform.write_uci(path, x, y)
    if edit:
        lines = path.read_bytes().split(b"\n")
        lines[4] = edit(lines[4])
        path.write_bytes(b"\n".join(lines))
    return path


@pytest.mark.parametrize("edit, expected", [
    (lambda line: b"nan" + line[line.index(b","):], ":5: "),
    (lambda line: b"-inf" + line[line.index(b","):], ":5: "),
    (lambda line: b"1e308" + line[line.index(b","):], ":5: "),
    (lambda line: line.replace(b",", b",\xff", 1), ":5: not UTF-8"),
])
def test_a_bad_uci_file_is_a_one_line_data_error_from_the_cli(tmp_path, capsys, edit, expected):
    x, y = waveform.generate(300, 21, seed=0)
    path = _uci(tmp_path / "waveform.data", x, y, edit)
    code = cli.main(["run", "--data", str(path), "--attributes", "21", "--epochs-pretrain", "2",
                     "--quiet", "--out", str(tmp_path / "r.parquet"), "--workdir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert f"{path}{expected}" in err
    assert not (tmp_path / "r.parquet").exists()  # no result row for unusable data


def test_a_uci_file_of_three_rows_is_a_data_error_naming_it(tmp_path, capsys):
    x, y = waveform.generate(3, 21, seed=0)
    path = _uci(tmp_path / "tiny.data", x, np.array([0, 1, 2]))
    code = cli.main(["run", "--data", str(path), "--attributes", "21", "--quiet",
                     "--out", str(tmp_path / "r.parquet"), "--workdir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and str(path) in err and "too few" in err, err
