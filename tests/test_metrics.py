import pytest
import torch

from prunerlib.masks import Masks
from prunerlib.metrics import count_flops, param_counts, pruned_flops, removed_fractions, weight_scope
from prunerlib.surgery import Removal, apply_removal
from tests.helpers import small_cnn, small_ffn


def test_dense_flops_come_from_torch_and_count_two_per_multiply_add():
    flops = count_flops(small_ffn(in_features=8, hidden=6), (8,))
    assert flops == {"fc1": 2 * 8 * 6, "fc2": 2 * 6 * 3}


def test_removing_units_and_filters_cuts_flops_like_the_smaller_network():
    model = small_cnn()
    masks = Masks(model)
    dense = sum(count_flops(model, (3, 32, 32)).values())
    assert pruned_flops(model, masks, (3, 32, 32)) == dense
    apply_removal(model, masks, Removal(filters={"conv1": [0, 1, 2]}))  # half of conv1
    # conv1 halves; conv2 reads half as many channels; nothing else changes.
    per_layer = count_flops(model, (3, 32, 32))
    expected = per_layer["conv1"] / 2 + per_layer["conv2"] / 2 + per_layer["fc1"] + per_layer["fc2"]
    assert pruned_flops(model, masks, (3, 32, 32)) == expected


def test_unstructured_masks_cut_the_zeroed_multiply_adds():
    model = small_ffn(in_features=8, hidden=6)
    masks = Masks(model)
    half = torch.zeros(6, 8, dtype=torch.bool)
    half[:, :4] = True
    apply_removal(model, masks, Removal(weights={"fc1.weight": half}))
    assert pruned_flops(model, masks, (8,)) == 2 * 8 * 6 / 2 + 2 * 6 * 3


def test_removed_fractions_and_parameter_counts():
    model = small_cnn()
    masks = Masks(model)
    total, nonzero = param_counts(model)
    assert total == nonzero == sum(p.numel() for p in model.parameters())
    apply_removal(model, masks, Removal(units={"fc1": [0, 1]}, filters={"conv2": [0, 1, 2, 3]}))
    fractions = removed_fractions(model, masks, ["fc1.weight"])
    assert fractions["units_removed_frac"] == 2 / 10
    assert fractions["filters_removed_frac"] == 4 / (6 + 8)
    # fc1 loses 2 of 10 rows, and half of its 200 input columns with conv2's filters.
    assert fractions["weights_removed_frac"] == 1 - (8 * 100) / (10 * 200)
    assert param_counts(model)[1] < total
    assert removed_fractions(small_ffn(), Masks(small_ffn()), ["fc1.weight"])["filters_removed_frac"] is None


def test_weights_removed_frac_counts_the_threshold_layers_scope_whatever_the_pruner():
    model = small_ffn(in_features=8, hidden=6)
    assert weight_scope(model, "hidden") == ["fc1.weight"]
    assert weight_scope(model, "all_linear") == ["fc1.weight", "fc2.weight"] == weight_scope(model, ("fc1", "fc2"))
    masks = Masks(model)
    apply_removal(model, masks, Removal(units={"fc1": [0, 1, 2]}))  # half the hidden units, as distinctiveness would
    # Half of fc1's rows; with fc2 in scope, also half of fc2's columns: the same half overall.
    assert removed_fractions(model, masks, weight_scope(model, "hidden"))["weights_removed_frac"] == 0.5
    assert removed_fractions(model, masks, weight_scope(model, "all_linear"))["weights_removed_frac"] == 0.5
    one = torch.zeros(3, 6, dtype=torch.bool)
    one[0, 4] = True  # a weight out of a live unit: only a scope with fc2 in it sees it go
    apply_removal(model, masks, Removal(weights={"fc2.weight": one}))
    assert removed_fractions(model, masks, weight_scope(model, "hidden"))["weights_removed_frac"] == 0.5
    assert removed_fractions(model, masks, weight_scope(model, "all_linear"))["weights_removed_frac"] == (24 + 10) / 66


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # the layer with no unit left
def test_flops_equal_pytorchs_flop_counter_for_every_layer_shape_a_pruned_model_compacts_to():
    from torch.utils.flop_counter import FlopCounterMode

    from prunerlib.models import CNN, FFN

    for model, shape in [(FFN(21, 50, 3), (21,)), (FFN(40, 1, 3), (40,)), (FFN(40, 0, 3), (40,)),
                         (CNN((16, 32), 128, 2, 32), (3, 32, 32)), (CNN((5, 9), 13, 2, 64), (3, 64, 64)),
                         (CNN((1, 2), 1, 2, 32), (3, 32, 32))]:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, *shape))
        prefix = type(model).__name__ + "."
        expected = {name[len(prefix):]: sum(ops.values())
                    for name, ops in counter.get_flop_counts().items() if name.startswith(prefix)}
        assert count_flops(model, shape) == expected



def test_pruned_flops_are_the_compacted_networks_flops_whatever_was_removed():
    """Counted on the dense network, they must equal what the physically smaller one counts."""
    import random

    from prunerlib.models import CNN, FFN
    from prunerlib.surgery import compact

    rng = random.Random(0)
    for trial in range(40):
        torch.manual_seed(trial)
        model, shape = (FFN(21, 50, 3), (21,)) if trial % 2 else (CNN((8, 12), 20, 2, 32), (3, 32, 32))
        masks = Masks(model)
        filters = {"conv1": rng.sample(range(8), rng.randint(0, 4)),
                   "conv2": rng.sample(range(12), rng.randint(0, 6))} if trial % 2 == 0 else {}
        apply_removal(model, masks, Removal(units={"fc1": rng.sample(range(20), rng.randint(0, 15))},
                                            weights={"fc1.weight": torch.rand_like(model.fc1.weight) > rng.random()},
                                            filters=filters))
        small = compact(model, masks)
        expected = sum(flops * float((small.get_submodule(name).weight != 0).sum()) / small.get_submodule(name).weight.numel()
                       for name, flops in count_flops(small, shape).items() if small.get_submodule(name).weight.numel())
        assert pruned_flops(model, masks, shape) == int(round(expected))
