import torch
from torch import nn

from prunerlib.masks import Masks
from prunerlib.models import CNN, FFN
from prunerlib.surgery import Removal, apply_removal, compact
from tests.helpers import small_cnn, small_ffn


def _physically_smaller_ffn(model: FFN, keep: list[int]) -> FFN:
    small = FFN(model.fc1.in_features, len(keep), model.fc2.out_features)
    with torch.no_grad():
        small.fc1.weight.copy_(model.fc1.weight[keep])
        small.fc1.bias.copy_(model.fc1.bias[keep])
        small.fc2.weight.copy_(model.fc2.weight[:, keep])
        small.fc2.bias.copy_(model.fc2.bias)
    return small


def test_removed_sigmoid_units_compute_what_a_smaller_ffn_computes():
    model = small_ffn(hidden=6)
    reference = _physically_smaller_ffn(model, keep=[0, 2, 3, 5])
    apply_removal(model, Masks(model), Removal(units={"fc1": [1, 4]}))
    x = torch.randn(100, 8)
    assert (model(x) - reference(x)).abs().max() <= 1e-5


def test_merge_outgoing_adds_the_removed_units_weights_to_the_kept_one():
    model = small_ffn(hidden=4)
    expected = model.fc2.weight[:, 0] + model.fc2.weight[:, 3]
    apply_removal(model, Masks(model), Removal(units={"fc1": [3]}, merges=[("fc1", 3, 0)]))
    assert torch.allclose(model.fc2.weight[:, 0], expected)
    assert torch.count_nonzero(model.fc2.weight[:, 3]) == 0


def test_removed_filters_compute_what_a_smaller_cnn_computes():
    model = small_cnn()
    keep1, keep2 = [0, 1, 3, 5], [1, 2, 4, 5, 6, 7]
    side = 5
    reference = CNN((len(keep1), len(keep2)), hidden=10, classes=2)
    cols = [c * side * side + k for c in keep2 for k in range(side * side)]
    with torch.no_grad():
        reference.conv1.weight.copy_(model.conv1.weight[keep1])
        reference.conv1.bias.copy_(model.conv1.bias[keep1])
        reference.conv2.weight.copy_(model.conv2.weight[keep2][:, keep1])
        reference.conv2.bias.copy_(model.conv2.bias[keep2])
        reference.fc1.weight.copy_(model.fc1.weight[:, cols])
        reference.fc1.bias.copy_(model.fc1.bias)
        reference.fc2.load_state_dict(model.fc2.state_dict())
    apply_removal(model, Masks(model), Removal(filters={"conv1": [2, 4], "conv2": [0, 3]}))
    x = torch.randn(20, 3, 32, 32)
    assert (model(x) - reference(x)).abs().max() <= 1e-5


def test_compact_matches_the_masked_network_and_is_smaller():
    model = small_cnn()
    masks = Masks(model)
    apply_removal(model, masks, Removal(units={"fc1": [0, 9]}, filters={"conv1": [1], "conv2": [2, 5, 7]}))
    small = compact(model, masks)
    assert (small.conv1.out_channels, small.conv2.out_channels, small.fc1.out_features) == (5, 5, 8)
    assert small.fc1.in_features == 5 * 25
    x = torch.randn(10, 3, 32, 32)
    assert (model(x) - small(x)).abs().max() <= 1e-5


def test_a_unit_cut_off_from_its_inputs_is_folded_into_the_next_bias():
    model = small_ffn(hidden=5)
    x = torch.randn(50, 8)
    masks = Masks(model)
    every_input_of_unit_2 = torch.zeros_like(model.fc1.weight, dtype=torch.bool)
    every_input_of_unit_2[2] = True
    with torch.no_grad():  # what the network computes once those weights are zero
        model.fc1.weight[2] = 0
    expected = model(x)
    apply_removal(model, masks, Removal(weights={"fc1.weight": every_input_of_unit_2}))
    assert not masks["fc1.bias"][2] and not masks["fc2.weight"][:, 2].any()  # removed
    assert (model(x) - expected).abs().max() <= 1e-5  # and nothing changed
    assert isinstance(compact(model, masks).fc1, nn.Linear) and compact(model, masks).fc1.out_features == 4
