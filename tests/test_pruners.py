import math

import pytest
import torch

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.models import FFN, UnitLayer
from prunerlib.pruners import PRUNERS, FilterRanking, build_pruners
from prunerlib.pruners.distinctiveness import angles, centred_activations
from prunerlib.surgery import Removal, apply_removal
from tests.helpers import context, small_cnn, small_ffn


def _distinct(**settings) -> object:
    return PRUNERS["distinctiveness"](TrialConfig.from_dict({"pruner": "distinctiveness", **settings}))


def _crafted_ffn() -> torch.nn.Module:
    """Units 0/1 identical (similar), 2/3 mirror images (complementary), 4 and 5 unrelated."""
    model = small_ffn(in_features=4, hidden=6)
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.zero_()
        model.fc1.weight[0, 0] = model.fc1.weight[1, 0] = 2.0
        model.fc1.weight[2, 1], model.fc1.weight[3, 1] = 1.5, -1.5
        model.fc1.weight[4, 2] = model.fc1.weight[5, 3] = 1.0
        model.fc2.weight.fill_(1.0)
        model.fc2.weight[:, 1] = 0.5  # unit 1 matters less to the next layer than unit 0
    return model


def test_angles_are_measured_in_degrees_between_activation_vectors():
    v = torch.tensor([[1.0, 0.5, 0.0, -1.0], [0.0, math.sqrt(3) / 2, 1.0, 0.0]], dtype=torch.float64)
    theta = angles(v)
    assert theta[0, 1] == pytest.approx(60.0) and theta[0, 2] == pytest.approx(90.0)
    assert theta[0, 3] == pytest.approx(180.0) and theta.dtype == torch.float64


def test_centring_spans_both_halves_for_sigmoid_and_rescales_other_activations():
    sig = centred_activations(torch.tensor([[0.0], [1.0]]), "sigmoid")
    assert sig.flatten().tolist() == [-0.5, 0.5]
    relu = centred_activations(torch.tensor([[2.0, 5.0], [6.0, 5.0]]), "relu")
    assert relu[:, 0].tolist() == [-0.5, 0.5]


def test_similar_pair_loses_the_quieter_unit_and_complementary_pair_goes_entirely():
    model = _crafted_ffn()
    removal = _distinct(angle_cutoff=15.0).decide(context(model, torch.randn(500, 4)))
    assert removal.units == {"fc1": [1, 2, 3]}
    assert removal.merges == []


def test_merge_outgoing_records_the_kept_unit():
    model = _crafted_ffn()
    removal = _distinct(merge="outgoing").decide(context(model, torch.randn(500, 4)))
    assert removal.merges == [("fc1", 1, 0)]


def test_cutoff_bounds_what_counts_as_similar():
    model = _crafted_ffn()
    with torch.no_grad():  # unit 1 now also listens a little to input 2: a 20-30° angle to unit 0
        model.fc1.weight[1, 2] = 1.0
    ctx = context(model, torch.randn(2000, 4))
    assert 1 not in _distinct(angle_cutoff=10.0).decide(ctx).units.get("fc1", [])
    assert 1 in _distinct(angle_cutoff=45.0).decide(ctx).units["fc1"]


def test_a_unit_removed_once_is_not_paired_again():
    model = small_ffn(in_features=4, hidden=3)
    with torch.no_grad():  # three identical units: two pairs share unit 0
        model.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0]] * 3))
        model.fc1.bias.zero_()
        model.fc2.weight.copy_(torch.tensor([[3.0, 2.0, 1.0]] * 3))
    removal = _distinct().decide(context(model, torch.randn(300, 4)))
    assert removal.units == {"fc1": [1, 2]}  # the loudest unit survives


def test_constant_units_are_skipped_unless_remove_constant_folds_them():
    model = _crafted_ffn()
    with torch.no_grad():  # unit 4 outputs sigmoid(0) = 0.5 on every input
        model.fc1.weight[4] = 0.0
    x = torch.randn(300, 4)
    assert 4 not in _distinct().decide(context(model, x)).units["fc1"]
    ctx = context(model, x)
    removal = _distinct(remove_constant=True).decide(ctx)
    assert 4 in removal.units["fc1"] and removal.constants == {"fc1": {4: pytest.approx(0.5)}}
    # Units 1-3 go with their contribution; constant unit 4's moves into the bias exactly.
    expected = model(x) - model.act(model.fc1(x))[:, [1, 2, 3]] @ model.fc2.weight[:, [1, 2, 3]].T
    apply_removal(model, ctx.masks, removal)
    assert (model(x) - expected.detach()).abs().max() <= 1e-5


def _saturated_ffn(activation: str) -> torch.nn.Module:
    """Units 0 and 1 carry signal; 2 and 3 are constant over the data, each its own way:
    sigmoid saturated near 1 and near 0 (tiny spread), or a dead ReLU and a ReLU stuck on."""
    torch.manual_seed(0)
    model = FFN(4, 4, 3, activation)
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.weight[0, 0], model.fc1.weight[1, 1] = 1.0, 1.0
        if activation == "sigmoid":  # about 1 - 6e-6 and 6e-6, moving by ~1e-7 with the inputs
            model.fc1.weight[2, 2] = model.fc1.weight[3, 2] = 0.01
            model.fc1.bias.copy_(torch.tensor([0.0, 0.0, 12.0, -12.0]))
        else:  # unit 2 never fires, unit 3 always outputs 3
            model.fc1.bias.copy_(torch.tensor([0.0, 0.0, -5.0, 3.0]))
        model.fc2.weight.normal_()
    return model


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_units_constant_over_the_data_are_never_paired_whatever_the_activation(activation):
    model = _saturated_ffn("sigmoid" if activation == "tanh" else activation)
    if activation == "tanh":  # saturated tanh units sit near +1 and -1
        model.act = torch.nn.Tanh()
        model.unit_layers = (UnitLayer("fc1", "act", "fc2", "tanh"),)
    x = torch.randn(400, 4).clamp(-3, 3)
    removal = _distinct(angle_cutoff=30.0).decide(context(model, x))
    # Before: the two constant units looked identical (angle 0) or opposite (180 deg) and went
    # without their output being folded anywhere.
    assert removal.units.get("fc1", []) == [] and removal.constants == {}


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_remove_constant_folds_a_constant_unit_so_the_output_does_not_change(activation):
    model = _saturated_ffn(activation)
    x = torch.randn(400, 4).clamp(-3, 3)
    ctx = context(model, x)
    removal = _distinct(remove_constant=True).decide(ctx)
    assert removal.units == {"fc1": [2, 3]} and set(removal.constants["fc1"]) == {2, 3}
    before = model(x).detach()
    apply_removal(model, ctx.masks, removal)
    assert (model(x) - before).abs().max() < 1e-4


@pytest.mark.parametrize("stat", ["mean_abs", "std"])
def test_threshold_masks_weights_below_factor_times_stat(stat):
    model = small_ffn()
    w = model.fc1.weight.detach()
    tau = 0.75 * (w.abs().mean() if stat == "mean_abs" else w.std())
    cfg = TrialConfig.from_dict({"pruner": "threshold", "threshold_factor": 0.75, "threshold_stat": stat})
    removal = PRUNERS["threshold"](cfg).decide(context(model, torch.randn(10, 8)))
    assert set(removal.weights) == {"fc1.weight"}
    assert torch.equal(removal.weights["fc1.weight"], w.abs() < tau)


def test_threshold_statistic_uses_only_still_unpruned_weights():
    model = small_ffn()
    ctx = context(model, torch.randn(10, 8))
    pruner = PRUNERS["threshold"](TrialConfig.from_dict({"pruner": "threshold"}))
    apply_removal(model, ctx.masks, pruner.decide(ctx))
    second = pruner.decide(ctx).weights["fc1.weight"]
    alive = model.fc1.weight.detach()[ctx.masks["fc1.weight"]]
    assert int(second.sum()) == int((alive.abs() < alive.abs().mean()).sum()) > 0
    assert not (second & ~ctx.masks["fc1.weight"]).any()


def test_threshold_scope_options():
    model = small_cnn()
    ctx = context(model, torch.randn(4, 3, 32, 32))
    make = lambda layers: PRUNERS["threshold"](TrialConfig.from_dict(  # noqa: E731
        {"pruner": "threshold", "threshold_layers": layers, "dataset": "catsdogs", "data": "d"}))
    assert set(make("all_linear").decide(ctx).weights) == {"fc1.weight", "fc2.weight"}
    assert set(make(["fc2"]).decide(ctx).weights) == {"fc2.weight"}
    with pytest.raises(ConfigError, match="threshold_layers: 'conv1' is not a linear layer"):
        make(["conv1"]).decide(ctx)


def test_l1_ranking_removes_the_filters_with_the_smallest_weights():
    model = small_cnn()
    with torch.no_grad():
        for k in range(6):
            model.conv1.weight[k] = torch.sign(model.conv1.weight[k]) * (k + 1) * 0.01
        model.conv1.weight[[1, 4]] *= 100  # filters 1 and 4 become the largest
    removal = FilterRanking((2, 0), "l1").decide(context(model, torch.randn(4, 3, 32, 32)))
    assert removal.filters == {"conv1": [0, 2]}


@pytest.mark.parametrize("criterion", ["mean_activation", "apoz"])
def test_activation_criteria_remove_a_filter_that_never_fires(criterion):
    model = small_cnn()
    with torch.no_grad():
        model.conv2.bias.fill_(1.0)  # every other filter fires
        model.conv2.weight[5] = 0.0
        model.conv2.bias[5] = -1.0  # ReLU output always 0: mean 0, 100% zeros
    removal = FilterRanking((0, 1), criterion).decide(context(model, torch.randn(16, 3, 32, 32)))
    assert removal.filters == {"conv2": [5]}


def test_filter_ranking_always_leaves_one_filter():
    model = small_cnn()
    ctx = context(model, torch.randn(4, 3, 32, 32))
    ranking = FilterRanking((4, 0), "l1")
    for _ in range(3):
        apply_removal(model, ctx.masks, ranking.decide(ctx))
    assert int(ctx.masks["conv1.bias"].sum()) == 1


def test_random_control_removes_as_much_as_its_mirror_elsewhere():
    model = small_ffn(hidden=20)
    ctx = context(model, torch.randn(200, 8), seed=3)
    cfg = TrialConfig.from_dict({"pruner": "random", "match": "threshold"})
    mirror = PRUNERS["threshold"](cfg).decide(ctx).weights["fc1.weight"]
    chosen = PRUNERS["random"](cfg).decide(ctx).weights["fc1.weight"]
    assert chosen.sum() == mirror.sum() and not torch.equal(chosen, mirror)
    again = PRUNERS["random"](cfg).decide(context(model, torch.randn(200, 8), seed=3)).weights["fc1.weight"]
    assert torch.equal(chosen, again)  # seeded


def test_random_control_for_distinctiveness_matches_the_unit_count():
    model = _crafted_ffn()
    cfg = TrialConfig.from_dict({"pruner": "random", "match": "distinctiveness"})
    removal = PRUNERS["random"](cfg).decide(context(model, torch.randn(500, 4)))
    assert len(removal.units["fc1"]) == 3


def test_cnn_trials_combine_a_linear_pruner_with_filter_ranking():
    cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": "d", "pruner": "distinctiveness",
                                 "filters_frac": 0.5, "conv_channels": [6, 8], "hidden": 10})
    names = [type(p).__name__ for p in build_pruners(cfg)]
    assert names == ["Distinctiveness", "Filters"]
    random_cfg = cfg.replace(pruner="random", match="distinctiveness")
    (control,) = build_pruners(random_cfg)  # a random control draws its filters itself
    assert [type(p).__name__ for p in control.method] == ["Distinctiveness", "Filters"]


@pytest.mark.parametrize("match", ["threshold", "distinctiveness", "filters"])
def test_a_cnn_random_control_masks_as_much_of_every_layer_as_its_method(match):
    # The "Threshold Model" control used to draw its threshold count on top of its own random
    # filters, whose masked input columns overlap its random weights less than the method's
    # l1-ranked filters overlap its thresholded weights: 82.8% of fc1 masked against 71.9%.
    settings = {"dataset": "catsdogs", "data": "d", "filters_frac": 0.5, "conv_channels": [6, 8], "hidden": 10}
    method_cfg = TrialConfig.from_dict({**settings, "pruner": "filters" if match == "filters" else match,
                                        "angle_cutoff": 60.0})
    control_cfg = TrialConfig.from_dict({**settings, "pruner": "random", "match": match, "angle_cutoff": 60.0})
    x = torch.rand(64, 3, 32, 32)
    kept = {}
    for cfg in (method_cfg, control_cfg):
        model = small_cnn()
        ctx = context(model, x)
        removal = Removal()
        for pruner in build_pruners(cfg):
            removal.extend(pruner.decide(ctx))
        apply_removal(model, ctx.masks, removal)
        kept[cfg.pruner] = {name: ctx.masks.kept(name) for name in ("conv1.bias", "conv2.bias", "fc1.weight", "fc1.bias")}
    assert kept["random"] == kept[method_cfg.pruner]
    assert kept["random"]["fc1.weight"] < small_cnn().fc1.weight.numel()
