"""The trial path on a CUDA device, without a GPU: `tests/fake_cuda.py` runs real numbers on
"cuda" tensors and fails mixed-device ops as real CUDA does; FakeTensorMode checks `compact`."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunerlib import pipeline
from prunerlib.batched import Population, train_population
from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.masks import Masks
from prunerlib.models import CNN
from prunerlib.pipeline import Workdirs, run_pack, run_trial
from prunerlib.surgery import _remove_filters, kept_indices
from tests.fake_cuda import FakeCudaTensor, fake_cuda
from tests.helpers import ffn_config, random_data, small_ffn
from tests.test_population import _cnn_config, _image_data

pytestmark = pytest.mark.fake_cuda

MISMATCH = "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"


# The harness itself: it must fail where real CUDA fails, and only there.

def test_a_mixed_device_add_raises_what_cuda_raises():
    with fake_cuda():
        x = torch.zeros(3, device="cuda")
        with pytest.raises(RuntimeError, match=MISMATCH):
            x + torch.ones(3)
        with pytest.raises(RuntimeError, match="cuda:0 and cpu!"):
            x.index_select(0, torch.tensor([0]))  # no TensorIterator: the codegen check


def test_a_cpu_scalar_tensor_mixes_with_cuda_as_in_real_cuda():
    with fake_cuda():
        x = torch.ones(3, device="cuda")
        y = x * torch.tensor(2.0)
        assert y.device == torch.device("cuda", 0) and y.cpu().tolist() == [2.0, 2.0, 2.0]
        with pytest.raises(RuntimeError, match="cpu and cuda:0!"):
            torch.tensor(2.0).add_(x)  # but never as the output


def test_indexing_follows_aten_device_rules():
    with fake_cuda():
        mask = torch.ones(4, 3, dtype=torch.bool, device="cuda")
        mask[torch.as_tensor([1, 2])] = False  # CPU indices into a CUDA tensor: allowed
        assert mask[torch.tensor([0, 1])].cpu().tolist() == [[True] * 3, [False] * 3]
        with pytest.raises(RuntimeError, match="indices should be either on cpu or on the same device"):
            torch.ones(4)[torch.tensor([0], device="cuda")]


def test_a_cuda_linear_trains_with_adam_and_sgd():
    with fake_cuda():
        torch.manual_seed(0)
        model = nn.Linear(4, 2).to("cuda")
        assert isinstance(model.weight, FakeCudaTensor) and model.weight.device.type == "cuda"
        x, y = torch.randn(16, 4).cuda(), torch.randint(0, 2, (16,), device="cuda")
        for make in (lambda p: torch.optim.Adam(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=0.1, foreach=True),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=True)):
            before = model.weight.detach().cpu().clone()
            optimizer = make(model.parameters())
            for _ in range(2):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            assert model.weight.grad.device.type == "cuda"
            assert not torch.equal(model.weight.detach().cpu(), before)


def test_numpy_of_a_cuda_tensor_raises_and_cpu_copies_do_not():
    with fake_cuda() as gpu:
        x = torch.arange(3.0, device="cuda")
        with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
            x.numpy()
        assert type(x.cpu()) is torch.Tensor and np.array_equal(x.cpu().numpy(), [0.0, 1.0, 2.0])
        assert x.sum().item() == 3.0
    assert gpu.syncs["item"] == 1 and gpu.syncs["to_cpu"] == 2


def test_compact_keeps_every_index_on_the_masks_device_under_fake_tensors():
    """FakeTensorMode raises on mixed devices; with a ShapeEnv, nonzero gets an unbacked size.
    (compact's deepcopy reads data pointers, which fake tensors do not have: its index
    arithmetic, `kept_indices`, and the slicing are what can go wrong on a device.)"""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()), torch.device("cuda"):
        model = CNN((6, 8), hidden=10, classes=2)
        masks = Masks(model)
        _remove_filters(masks, model.filter_layers[1], [1, 3])
        keep_out, keep_in = kept_indices(model, masks)
        sliced = [model.get_submodule(name).weight[keep_out[name]] for name in keep_out]
        sliced += [model.get_submodule(name).weight[:, keep_in[name]] for name in keep_in]
    assert {t.device.type for t in [*keep_out.values(), *keep_in.values(), *sliced]} == {"cuda"}


# The trial path on CUDA.

def _cnn_pruners() -> list[TrialConfig]:
    return [_cnn_config(pruner="filters", filters_frac=0.5, filter_criterion=c, seed=s)
            for s, c in enumerate(("l1", "mean_activation", "apoz", "random"))] + [
        _cnn_config(pruner="distinctiveness", filters_pruned=2, angle_cutoff=60.0),
        _cnn_config(pruner="threshold", filters_pruned=[1, 3], lr=3e-3),
        _cnn_config(pruner="random", match="filters", filters_frac=0.25),
        _cnn_config(pruner="random", match="threshold", filters_pruned=1, cycles=2),
        _cnn_config(pruner="none"),
    ]


def _ffn_pruners() -> list[TrialConfig]:
    small = {"epochs_pretrain": 2, "device": "cuda"}
    return [ffn_config(pruner="distinctiveness", angle_cutoff=30.0, **small),
            ffn_config(pruner="threshold", threshold_factor=1.0, cycles=2, **small),
            ffn_config(pruner="threshold", optimizer="sgd", lr=0.05, momentum=0.9, **small),
            ffn_config(pruner="random", match="distinctiveness", angle_cutoff=50.0, cycles=2, **small),
            ffn_config(pruner="none", **small)]


@pytest.fixture
def synthetic_images(monkeypatch):
    data = _image_data()
    # the photos loader is not what is under test
    monkeypatch.setattr(pipeline, "load_data", lambda cfg, cache=None: Data(**vars(data)))


@pytest.fixture
def steps(monkeypatch):
    """Counts of the population's torch steps and C-kernel epochs."""
    seen = {"step": 0, "kernel": 0}
    step, epoch = Population.step, Population.ffn_epoch
    monkeypatch.setattr(Population, "step", lambda self, *a: seen.__setitem__("step", seen["step"] + 1) or step(self, *a))
    monkeypatch.setattr(Population, "ffn_epoch",
                        lambda self, *a: seen.__setitem__("kernel", seen["kernel"] + 1) or epoch(self, *a))
    return seen


def _assert_all_ok(rows_per_trial: list[list[dict]]) -> None:
    for rows in rows_per_trial:
        for row in rows:
            assert row["status"] == "ok", row.get("error")
            assert row["device"] == "cuda"


def test_cnn_trials_run_on_cuda(tmp_path, synthetic_images):
    cfgs = [cfg.replace(device="cuda") for cfg in _cnn_pruners()]
    with fake_cuda():
        rows = [run_trial(cfg, Workdirs(tmp_path), progress=False) for cfg in cfgs]
    _assert_all_ok(rows)


def test_ffn_trials_run_on_cuda(tmp_path):
    with fake_cuda():
        rows = [run_trial(cfg, Workdirs(tmp_path), progress=False) for cfg in _ffn_pruners()]
    _assert_all_ok(rows)


def test_cnn_packs_run_on_cuda(tmp_path, synthetic_images, steps):
    cfgs = [cfg.replace(device="cuda") for cfg in _cnn_pruners()]
    with fake_cuda():
        rows = run_pack(cfgs, Workdirs(tmp_path))
    _assert_all_ok(rows)
    assert steps["step"] > 0


def test_ffn_packs_run_on_cuda_with_the_torch_step_not_the_cpu_kernel(tmp_path, steps):
    with fake_cuda():
        rows = run_pack(_ffn_pruners(), Workdirs(tmp_path))
    _assert_all_ok(rows)
    assert steps["step"] > 0 and steps["kernel"] == 0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_population_fine_tuning_syncs_with_the_host_per_epoch_not_per_step(optimizer):
    data = random_data(n=256, features=8)
    cfgs = [TrialConfig.from_dict({"optimizer": optimizer, "lr": lr, "momentum": 0.9}) for lr in (1e-2, 3e-3)]
    with fake_cuda() as gpu:
        data.to(torch.device("cuda"))
        models = [small_ffn(seed=k).to("cuda") for k in range(2)]
        pop = Population(models, [Masks(m).to("cuda") for m in models], cfgs)
        gpu.syncs.clear()
        gpu.host_to_device = 0
        train_population(pop, data, [0, 1], epochs=2, batch_size=8)  # 32 steps an epoch
    # Per epoch (of 32 steps): one upload of the batch order, one look at the losses.
    assert gpu.total_syncs <= 2, gpu.syncs
    assert gpu.host_to_device <= 2


def test_single_trial_training_uploads_each_batch_order_once_per_epoch():
    from prunerlib.training import train

    data = random_data(n=256, features=8)
    with fake_cuda() as gpu:
        data.to(torch.device("cuda"))
        model = small_ffn().to("cuda")
        gpu.host_to_device = 0
        train(model, data, TrialConfig.from_dict({"batch_size": 8}), epochs=2, seed=0, progress=False)
    assert gpu.host_to_device == 2


def test_a_cuda_pack_that_runs_out_of_gpu_memory_is_split_and_every_member_still_finishes(tmp_path, monkeypatch):
    from prunerlib import population

    tried = []
    real = population.train_population

    def two_fit(pop, data, seeds, **kwargs):  # the card holds two members' fine-tuning at a time
        tried.append(len(seeds))
        if len(seeds) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pop, data, seeds, **kwargs)

    monkeypatch.setattr(population, "train_population", two_fit)
    with fake_cuda():
        rows = run_pack(_ffn_pruners(), Workdirs(tmp_path))
    _assert_all_ok(rows)
    assert tried[0] > 2 and max(tried[1:]) <= 2  # too many once, then halves for the rest of the trial


def test_a_cuda_trial_times_its_networks_with_synchronised_events_and_saves_a_model_the_cpu_loads(tmp_path,
                                                                                                 monkeypatch):
    from prunerlib import latency, load_pruned
    from prunerlib.datasets import load_data
    from prunerlib.training import accuracy

    monkeypatch.setattr(latency, "_MEASURED", {})  # figures a CPU test measured are not the GPU's
    cfg = ffn_config(pruner="distinctiveness", angle_cutoff=60.0, device="cuda")
    dirs = Workdirs(tmp_path / "pre", models=tmp_path / "models", results=tmp_path, latency_batch=8)
    with fake_cuda() as gpu:
        final = run_trial(cfg, dirs, progress=False)[-1]
    assert final["status"] == "ok" and final["device"] == "cuda" and final["units_removed_frac"] > 0
    # Four figures (dense and pruned, at 8 and at 1), each a median of at least five timed passes.
    assert gpu.syncs["event"] >= 4 * 5 and final["latency_threads"] is None
    assert final["measured_speedup"] == final["latency_ms_dense"] / final["latency_ms_pruned"]
    loaded = load_pruned(tmp_path / final["model_path"])  # no fake device now: the file holds CPU tensors
    data = load_data(cfg)
    assert accuracy(loaded, data.test_x, data.test_y) == final["acc_finetuned"]
