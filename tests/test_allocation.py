"""`filters_pruned: auto`: the global filter count split over conv layers by validation-loss
sensitivity, on a tiny CNN pretrained on real photos; and its random control's counts."""

import copy
import dataclasses
import itertools

import pytest
import torch

from prunerlib.allocation import split
from prunerlib.cli import main
from prunerlib.config import TrialConfig
from prunerlib.datasets import load_data
from prunerlib.errors import ConfigError
from prunerlib.models import CNN
from prunerlib.pipeline import TrialState, Workdirs, run_pack
from prunerlib.pretrained import load_or_pretrain
from prunerlib.pruners import PRUNERS

CPU = torch.device("cpu")


def _cfg(folder, **settings) -> TrialConfig:
    return TrialConfig.from_dict({
        "dataset": "catsdogs", "data": str(folder), "train_per_class": 1000, "test_per_class": 10, "val_frac": 0.2,
        "image_size": 16, "conv_channels": [6, 8], "hidden": 12, "epochs_pretrain": 30, "epochs_finetune": 1,
        "batch_size": 16, "device": "cpu", "seed": 2, "pruner": "filters", "filters_pruned": "auto",
        "filters_frac": 0.25, **settings})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from tests.conftest import CATSDOGS
    if not CATSDOGS.is_dir():
        pytest.skip(f"{CATSDOGS} not found: the real Dogs vs. Cats photos live in ../shared, outside the repo")
    tmp = tmp_path_factory.mktemp("alloc")
    cfg = _cfg(CATSDOGS)
    data = load_data(cfg, tmp / "cache")
    model, pre = load_or_pretrain(cfg, data, tmp / "pretrained", CPU, progress=False)
    return cfg, data, model, pre, Workdirs(tmp / "pretrained", image_cache=tmp / "cache")


def _prune(cfg, data, model, pre) -> tuple[int, ...]:
    """Filters removed per conv layer by one pruning step of `cfg` on `model` (pruned in place)."""
    state = TrialState(cfg, data, model, pre)
    state.prune(1)
    return tuple(int((state.masks[f"{layer.conv}.bias"] == 0).sum()) for layer in model.filter_layers)


def _widened(model: CNN, free: str) -> CNN:
    """The trained model with 3 more filters in layer `free`, all weights and bias 0: they output
    0 whatever the input, so the network computes exactly what it did, and l1 ranks them first."""
    c1, c2 = model.conv1.out_channels, model.conv2.out_channels
    wide = CNN((c1 + 3, c2) if free == "conv1" else (c1, c2 + 3), model.fc1.out_features, 2, 16)
    with torch.no_grad():
        for name, weights in wide.named_parameters():
            weights.zero_()
            trained = model.get_parameter(name)
            weights[tuple(slice(0, n) for n in trained.shape)] = trained
    return wide


def test_split_is_the_least_summed_loss_for_the_total_and_keeps_a_filter_per_layer():
    torch.manual_seed(0)
    curves = [torch.rand(6).double(), torch.rand(8).double(), torch.rand(3).double()]
    for total in range(0, 15):
        counts = split(curves, total)
        assert sum(counts) == min(total, 5 + 7 + 2) and all(k < len(c) for k, c in zip(counts, curves))
        brute = min((ks for ks in itertools.product(*(range(len(c)) for c in curves)) if sum(ks) == sum(counts)),
                    key=lambda ks: sum(float(c[k]) for c, k in zip(curves, ks)))
        assert counts == brute
    assert split(curves, 100) == (5, 7, 2)  # more than the layers hold: each keeps one


@pytest.mark.parametrize("free, auto, uniform", [("conv1", (3, 0), (2, 1)), ("conv2", (0, 3), (1, 2))])
def test_auto_takes_the_filters_that_cost_nothing(pretrained, free, auto, uniform):
    # 3 filters of one layer are free to remove, and so the 3 auto removes (filters_frac 0.17:
    # round(.17 w1) + round(.17 w2) = 3); the uniform split takes some of the other layer's, and
    # the network's outputs change. (On this seed's model no real filter's removal lowers the
    # validation loss; on a model where one does, auto rightly takes that one instead.)
    cfg, data, model, pre, _ = pretrained
    cfg = cfg.replace(conv_channels=(9, 8) if free == "conv1" else (6, 11), filters_frac=0.17)
    before = model(data.val_x)
    for settings, counts, same in (({}, auto, True), ({"filters_pruned": None}, uniform, False)):
        wide = _widened(model, free)
        assert _prune(cfg.replace(**settings), data, wide, pre) == counts
        assert torch.equal(wide(data.val_x), before) is same


def test_decisions_read_no_test_data(pretrained):
    cfg, data, model, pre, _ = pretrained
    garbage = dataclasses.replace(data, test_x=torch.full_like(data.test_x, float("nan")),
                                  test_y=torch.zeros_like(data.test_y))
    shuffled = dataclasses.replace(data, val_y=1 - data.val_y)
    chosen = _prune(cfg, data, copy.deepcopy(model), pre)
    assert sum(chosen) == 4 and _prune(cfg, garbage, copy.deepcopy(model), pre) == chosen
    assert _prune(cfg, shuffled, copy.deepcopy(model), pre) != chosen  # but it does read validation


def test_random_control_removes_per_layer_what_auto_removed_at_each_cycle(pretrained):
    # From cycle 2 on, auto re-planned on the control's own (randomly pruned) model would split
    # differently ('0,4' after cycle 2 here, against the method's '1,3'): the control follows
    # the method's trajectory instead. With one cycle it decides the method's step itself.
    cfg, _, _, _, dirs = pretrained
    method = cfg.replace(cycles=3, filters_frac=0.17)
    controls = [method.replace(pruner="random", match="filters", cycles=cycles) for cycles in (3, 1)]
    rows = run_pack([method, *controls], dirs)
    removed = [[r["filters_removed"] for r in member] for member in rows]
    assert all(r["status"] == "ok" for member in rows for r in member)
    assert removed[1] == removed[0] and removed[2] == removed[0][:1], removed
    assert {r["filters_pruned"] for member in rows for r in member} == {"auto:l1"}


@pytest.mark.parametrize("settings, says", [
    ({"filters_pruned": "auto", "filters_frac": None}, "filters_pruned: auto needs filters_frac"),
    ({"filters_pruned": ["auto", 3]}, "filters_pruned: expected int or a list of int or auto, got ['auto', 3]"),
    ({"dataset": "waveform", "data": None}, "filters_pruned: the FFN has no conv filters"),
    ({"filters_frac": 0.99}, "filters_pruned: conv1 has 6 filters; pruning 6 must leave at least one"),
])
def test_bad_auto_settings_are_one_line_errors(settings, says):
    with pytest.raises(ConfigError) as error:
        _cfg("photos", **settings)
    assert str(error.value).startswith(says) and "\n" not in str(error.value)


def test_cli_refuses_auto_without_a_share(tmp_path, capsys):
    code = main(["run", "--dataset", "catsdogs", "--data", str(tmp_path), "--pruner", "filters",
                 "--filters-pruned", "auto", "--out", str(tmp_path / "r.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "filters_pruned: auto needs filters_frac" in err and err.count("\n") == 1, err


def test_a_context_without_validation_data_is_refused():
    from tests.helpers import context, small_cnn
    auto = PRUNERS["filters"](TrialConfig.from_dict({"dataset": "catsdogs", "data": "d", "filters_pruned": "auto",
                                                     "filters_frac": 0.5, "pruner": "filters"}))
    with pytest.raises(ValueError, match="filters_pruned: auto decides on validation data"):
        auto.decide(context(small_cnn(), torch.randn(4, 3, 32, 32)))


def test_auto_rows_are_labelled_apart_from_the_uniform_split():
    import pandas as pd

    from prunerlib.analysis.labels import setting_label
    row = lambda **r: pd.Series({"filters_frac": 0.5, "filter_criterion": "l1", **r})  # noqa: E731
    assert setting_label(row(pruner="filters", filters_pruned="8,16")) == "filters 50% (l1)"
    assert setting_label(row(pruner="filters", filters_pruned="auto:l1")) == "filters 50% auto (l1)"
    assert (setting_label(row(pruner="random", match="filters", filters_pruned="auto:l1", filter_criterion="random"))
            == "as filters: filters 50% auto by l1 (random)")
