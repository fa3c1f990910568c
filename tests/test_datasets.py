import numpy as np
import pytest
import torch

from prunerlib.config import TrialConfig
from prunerlib.datasets import load_data, stratified_split
from prunerlib import waveform
from prunerlib.errors import DataError


def test_stratified_split_keeps_class_shares_and_never_overlaps():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    kept, held = stratified_split(y, 0.2, seed=0)
    assert len(held) == 200 and not set(kept) & set(held) and len(kept) + len(held) == 1000
    assert np.bincount(y[held]).tolist() == [100, 60, 40]
    assert not np.array_equal(held, stratified_split(y, 0.2, seed=1)[1])


def test_waveform_default_split_is_4000_train_1000_test_with_validation_from_train():
    data = load_data(TrialConfig.from_dict({}))
    assert len(data.test_y) == 1000 and len(data.train_y) + len(data.val_y) == 4000
    assert len(data.val_y) == 400 and data.in_features == 40 and data.classes == 3
    # Scaling comes from the fitting part only: there it is exactly standard.
    assert torch.allclose(data.train_x.mean(0), torch.zeros(40), atol=1e-4)
    rows = {tuple(r) for r in data.test_x.tolist()}
    assert not rows & {tuple(r) for r in data.train_x.tolist()}


def test_a_uci_file_replaces_generated_data(tmp_path):
    x, y = waveform.generate(500, 21, seed=9)
    path = tmp_path / "waveform.data"
    waveform.write_uci(path, x, y)
    data = load_data(TrialConfig.from_dict({"data": str(path), "attributes": 21}))
    assert len(data.test_y) + len(data.train_y) + len(data.val_y) == 500 and data.in_features == 21


def test_catsdogs_images_are_normalised_with_training_statistics(catsdogs_dir, tmp_path):
    cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": str(catsdogs_dir), "train_per_class": 100,
                                 "test_per_class": 20})
    data = load_data(cfg, image_cache_dir=tmp_path)
    assert data.train_x.shape == (180, 3, 32, 32) and len(data.val_y) == 20 and len(data.test_y) == 40
    assert data.classes == 2 and data.flip  # flips are for training batches only (training.train)
    # Per-channel statistics come from the fitting part: there the channels are standard.
    assert torch.allclose(data.train_x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(data.train_x.std((0, 2, 3)), torch.ones(3), atol=1e-3)


@pytest.mark.parametrize("rows", [3, 12])
def test_a_uci_file_too_small_to_split_is_a_data_error_naming_it(tmp_path, rows):
    x, y = waveform.generate(rows, 21, seed=0)
    path = tmp_path / "small.data"
    waveform.write_uci(path, x, np.arange(rows) % 3)
    with pytest.raises(DataError, match=rf"^data: {path}: {rows} rows are too few"):
        load_data(TrialConfig.from_dict({"data": str(path), "attributes": 21}))


def test_a_uci_file_with_a_handful_per_class_splits(tmp_path):
    x, y = waveform.generate(21, 21, seed=0)
    path = tmp_path / "small.data"
    waveform.write_uci(path, x, np.arange(21) % 3)
    data = load_data(TrialConfig.from_dict({"data": str(path), "attributes": 21}))
    for part in (data.train_y, data.val_y, data.test_y):
        assert part.bincount(minlength=3).min() >= 1
