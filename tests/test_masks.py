import pytest
import torch

from prunerlib.config import TrialConfig
from prunerlib.masks import Masks
from prunerlib.surgery import Removal, apply_removal
from prunerlib.training import train
from tests.helpers import random_data, small_cnn, small_ffn


@pytest.mark.parametrize("optimizer, extra", [
    ("adam", {}),
    ("sgd", {"momentum": 0.9, "weight_decay": 0.01}),
])
def test_pruned_weights_stay_exactly_zero_through_fine_tuning(optimizer, extra):
    cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": "d", "optimizer": optimizer, "lr": 0.01,
                                 "batch_size": 16, **extra})
    model, data = small_cnn(), random_data(n=96, classes=2, image=True)
    # Warm the optimiser state first, as pretraining does, so stale momentum would show.
    train(model, data, cfg, epochs=1, seed=0, progress=False)
    masks = Masks(model)
    unstructured = torch.rand_like(model.fc1.weight) < 0.5
    apply_removal(model, masks, Removal(units={"fc1": [1, 4]}, filters={"conv1": [0, 2], "conv2": [3]},
                                        weights={"fc1.weight": unstructured}))
    pruned = {name: ~mask for name, mask in masks.tensors.items()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(model, data, cfg, epochs=3, seed=1, masks=masks, progress=False)
    params = dict(model.named_parameters())
    for name, where in pruned.items():
        assert where.any() or name.startswith("fc2.bias")
        assert torch.count_nonzero(params[name][where]) == 0, name
    # The rest did learn: masking must not freeze the network.
    assert not torch.equal(before["fc1.weight"][masks["fc1.weight"]], params["fc1.weight"][masks["fc1.weight"]])


def test_masks_start_full_and_cover_every_linear_and_conv_parameter():
    masks = Masks(small_cnn())
    assert set(masks.tensors) == {f"{m}.{p}" for m in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")}
    assert all(m.all() for m in masks.tensors.values())
    assert set(Masks(small_ffn()).tensors) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
