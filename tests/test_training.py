import pytest
import torch

from prunerlib.config import TrialConfig
from prunerlib.errors import TrainingDiverged
from prunerlib.training import accuracy, plateaued, train
from tests.helpers import random_data, small_ffn


def test_plateau_stops_when_recent_gains_fall_below_min_delta():
    assert not plateaued([0.5, 0.6, 0.7], patience=3, min_delta=0.01)  # too early to tell
    assert not plateaued([0.5, 0.6, 0.7, 0.72], patience=3, min_delta=0.01)
    assert plateaued([0.70, 0.71, 0.705, 0.712, 0.709], patience=3, min_delta=0.01)


def test_plateau_pretraining_runs_fewer_epochs_than_allowed_on_a_solved_problem():
    x = torch.randn(400, 8)
    data = random_data(features=8)
    data.train_x, data.train_y = x, (x[:, 0] > 0).long()
    data.val_x, data.val_y = x[:100], data.train_y[:100]
    cfg = TrialConfig.from_dict({"lr": 0.01, "patience": 3, "min_delta": 0.01})
    log = train(small_ffn(), data, cfg, epochs=50, seed=0, plateau=True, progress=False)
    assert 3 < log.epochs_run < 50 and log.val_acc[-1] > 0.9


def test_training_is_reproducible_from_the_seed():
    cfg = TrialConfig.from_dict({})
    data = random_data()
    a, b = small_ffn(), small_ffn()
    train(a, data, cfg, epochs=2, seed=5, progress=False)
    train(b, data, cfg, epochs=2, seed=5, progress=False)
    assert torch.equal(a.fc1.weight, b.fc1.weight)


def test_divergence_raises_a_named_error():
    cfg = TrialConfig.from_dict({"lr": 1e38, "optimizer": "sgd"})  # overflows float32 within an epoch
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(small_ffn(), random_data(), cfg, epochs=5, seed=0, progress=False)


def test_accuracy():
    model = small_ffn()
    data = random_data()
    predicted = model(data.test_x).argmax(1)
    assert accuracy(model, data.test_x, data.test_y) == float((predicted == data.test_y).float().mean())
