import shutil

import pytest
import torch

from prunerlib import batched, ffn_kernel, pipeline, population, pretrained
from prunerlib.batched import Population, train_population
from prunerlib.config import TrialConfig
from prunerlib.datasets import Data, load_data
from prunerlib.errors import TrainingDiverged
from prunerlib.masks import Masks
from prunerlib.models import FFN, build_model
from prunerlib.pipeline import TrialState, Workdirs, run_pack, run_trial
from prunerlib.population import member_bytes, members_that_fit
from prunerlib.surgery import Removal, apply_removal, compact, live_units
from prunerlib.training import train
from tests.helpers import ffn_config, random_data, small_cnn, small_ffn

# Population members compute exactly what their single runs compute, except that a batched
# matmul or grouped convolution may sum in another order: trajectories then differ by float
# rounding (~1e-7 relative per step), which a few short epochs grow to ~1e-6. Weights are
# compared at 1e-4; an accuracy can move only if an example sits within that of a decision
# boundary, so accuracies may differ by at most one example.
WEIGHT_ATOL = 1e-4

# Columns that differ between two runs of one configuration by design: identity and timing.
_RUN_SPECIFIC = {"started_at", "wall_pretrain_s", "wall_finetune_s"}
_ACCURACIES = {"acc_pruned", "acc_finetuned", "train_acc_finetuned", "val_acc_finetuned"}


def _mixed_ffn_population() -> list[TrialConfig]:
    cfgs = []
    for seed in (0, 1):
        cfgs += [ffn_config(pruner="distinctiveness", angle_cutoff=cutoff, seed=seed) for cutoff in (15.0, 30.0)]
        cfgs += [ffn_config(pruner="threshold", threshold_factor=f, cycles=2, seed=seed) for f in (0.5, 1.0)]
        cfgs += [ffn_config(pruner="none", seed=seed),
                 ffn_config(pruner="random", match="threshold", threshold_factor=1.0, seed=seed),
                 # Controls that carry their method's trajectory beside them from cycle 2 on.
                 ffn_config(pruner="random", match="threshold", threshold_factor=1.0, cycles=3, seed=seed),
                 ffn_config(pruner="random", match="distinctiveness", angle_cutoff=50.0, cycles=2, seed=seed)]
    # Per-member hyper-parameters inside one population, and a member that fits no group.
    cfgs += [ffn_config(pruner="threshold", lr=1e-3, weight_decay=1e-3, seed=2),
             ffn_config(pruner="threshold", epochs_finetune=1, seed=2)]
    return cfgs


def _capture_masks(monkeypatch) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """Every trial's masks after each cycle, by (config hash, cycle), however it ran."""
    seen: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    record = TrialState.record

    def spy(self: TrialState, cycle: int, wall: float) -> bool:
        seen[(self.cfg.config_hash(), cycle)] = self.masks.state_dict()
        return record(self, cycle, wall)

    monkeypatch.setattr(TrialState, "record", spy)
    return seen


def _assert_rows_match(single: list[dict], packed: list[dict], n_test: int) -> None:
    assert len(packed) == len(single)
    for a, b in zip(single, packed):
        assert set(a) == set(b)
        for column in set(a) - _RUN_SPECIFIC - _ACCURACIES:
            assert a[column] == b[column], column
        for column in _ACCURACIES & set(a):
            assert abs(a[column] - b[column]) <= 1 / n_test + 1e-12, column


def _run_both(cfgs, tmp_path):
    """Each configuration run alone and as a pack, from separate pretrained stores."""
    single = [run_trial(cfg, Workdirs(tmp_path / "single"), trial_id=f"t{i}", progress=False)
              for i, cfg in enumerate(cfgs)]
    packed = run_pack(cfgs, Workdirs(tmp_path / "pack"), trial_ids=[f"t{i}" for i in range(len(cfgs))])
    return single, packed


def test_a_mixed_ffn_pack_gives_every_member_its_single_run(tmp_path, monkeypatch):
    cfgs = _mixed_ffn_population()
    masks = _capture_masks(monkeypatch)
    single = [run_trial(cfg, Workdirs(tmp_path / "single"), trial_id=f"t{i}", progress=False)
              for i, cfg in enumerate(cfgs)]
    single_masks = dict(masks)
    masks.clear()
    packed = run_pack(cfgs, Workdirs(tmp_path / "pack"), trial_ids=[f"t{i}" for i in range(len(cfgs))])
    assert masks.keys() == single_masks.keys()  # the same cycles ran
    for key, tensors in single_masks.items():
        for name, mask in tensors.items():
            assert torch.equal(masks[key][name], mask), (key, name)
    n_test = round(cfgs[0].n * cfgs[0].test_frac)
    for a, b in zip(single, packed):
        _assert_rows_match(a, b, n_test)
    assert {r["status"] for rows in packed for r in rows} == {"ok"}


def test_a_group_larger_than_a_pack_runs_as_several(tmp_path, monkeypatch):
    sizes = []
    monkeypatch.setattr(pipeline, "members_that_fit", lambda cfg, device, gpu_share=1.0: 2)
    def fine_tuning(models, masks, *a):  # pretraining's populations carry no masks
        sizes.extend([len(models)] if any(m is not None for m in masks) else [])
        return Population(models, masks, *a)

    monkeypatch.setattr(population, "Population", fine_tuning)
    cfgs = [ffn_config(pruner="threshold", threshold_factor=f) for f in (0.5, 0.75, 1.0, 1.25, 1.5)]
    single, packed = _run_both(cfgs, tmp_path)
    assert sizes == [2, 2]  # and the fifth ran alone, as a plain trial
    for a, b in zip(single, packed):
        _assert_rows_match(a, b, n_test=120)
    # Alone in its population, a member fine-tunes as a single trial does: to the bit.
    assert [{k: v for k, v in r.items() if k not in _RUN_SPECIFIC} for r in packed[4]] == \
        [{k: v for k, v in r.items() if k not in _RUN_SPECIFIC} for r in single[4]]


def test_pretraining_runs_once_per_key_in_a_pack_its_models_together(tmp_path, monkeypatch):
    calls = []
    real = pretrained.pretrain_models
    monkeypatch.setattr(pretrained, "pretrain_models", lambda models, *a, **k: calls.append(len(models)) or
                        real(models, *a, **k))
    cfgs = [ffn_config(pruner=p, seed=s) for s in (0, 1) for p in ("none", "threshold", "distinctiveness")]
    rows = run_pack(cfgs, Workdirs(tmp_path))
    assert calls == [2] and len(list(tmp_path.glob("*/model.pt"))) == 2
    assert [r[0]["pretrain_reused"] for r in rows] == [False, True, True, False, True, True]


def test_an_ffn_pretrained_beside_others_is_to_the_bit_the_one_pretrained_alone():
    """What makes a pack's rows its members' single runs' from the first epoch: pretraining on
    the kernel does not depend on who else trains. Each member also stops at its own plateau."""
    cfgs = [ffn_config(seed=s, epochs_pretrain=40, patience=p, lr=lr)
            for s, p, lr in ((0, 2, 1e-3), (1, 3, 3e-3), (2, 2, 1e-2), (3, 40, 1e-3))]
    data = load_data(cfgs[0])
    if ffn_kernel.load() is None:
        pytest.skip("the FFN kernel did not compile here: every model pretrains alone with training.train")
    build = lambda cfg: build_model(cfg, data.in_features, data.classes)  # noqa: E731
    together = [build(cfg) for cfg in cfgs]
    logs = population.pretrain_models(together, cfgs, data, progress=False)
    for cfg, model, log in zip(cfgs, together, logs):
        alone = build(cfg)
        (single,) = population.pretrain_models([alone], [cfg], data, progress=False)
        assert single.epochs_run == log.epochs_run and single.val_acc == log.val_acc
        for a, b in zip(alone.parameters(), model.parameters()):
            assert torch.equal(a, b)
    runs = [log.epochs_run for log in logs]
    assert len(set(runs)) > 1 and runs[3] == 40, runs  # plateaus of their own; patience 40 never stops


def test_a_diverging_member_fails_alone(tmp_path):
    # The diverging member must reach fine-tuning: give its pretrain key a sane pretrained model.
    sane = ffn_config(pruner="threshold", optimizer="sgd", lr=0.05)
    wild = ffn_config(pruner="threshold", optimizer="sgd", lr=1e38)  # overflows float32 within an epoch
    for root in ("single", "pack"):
        run_trial(sane, Workdirs(tmp_path / root), progress=False)
        fp = load_data(sane).fingerprint  # one data for both: the store keys differ by settings alone
        shutil.copytree(*(tmp_path / root / pretrained.store_key(cfg, fp) for cfg in (sane, wild)))
    cfgs = [sane.replace(pruner="distinctiveness"), wild, sane.replace(pruner="none", seed=1), sane]
    single, packed = _run_both(cfgs, tmp_path)
    assert single[1][0]["status"] == "failed" and "TrainingDiverged" in single[1][0]["error"]
    for i, (a, b) in enumerate(zip(single, packed)):
        _assert_rows_match(a, b, n_test=120)
        assert b[0]["status"] == ("failed" if i == 1 else "ok")


def test_a_diverging_pretraining_fails_every_member_of_its_key_once(tmp_path, monkeypatch):
    calls = []
    real = pretrained.pretrain_models
    monkeypatch.setattr(pretrained, "pretrain_models", lambda models, *a, **k: calls.append(len(models)) or
                        real(models, *a, **k))
    cfgs = [ffn_config(pruner=p, optimizer="sgd", lr=lr) for p, lr in (("none", 1e38), ("threshold", 1e38), ("none", 0.05))]
    rows = run_pack(cfgs, Workdirs(tmp_path))
    assert [r[0]["status"] for r in rows] == ["failed", "failed", "ok"]
    assert rows[0][0]["error"] == rows[1][0]["error"] and "TrainingDiverged" in rows[0][0]["error"]
    assert "in epoch 1 of pretrain" in rows[0][0]["error"]  # the message its single run gives
    assert calls == [2]  # the diverging key and the sane key, once, together
    assert len(list(tmp_path.glob("*/model.pt"))) == 1  # only the sane one is stored


def _image_data(n: int = 96) -> Data:
    data = random_data(n=n, classes=2, image=True)
    data.train_y = (data.train_x[:, 0].mean((1, 2)) > 0).long()  # learnable, so weights move
    data.val_y, data.test_y = data.train_y[:64], data.train_y[:64]
    return data


def _cnn_config(**settings) -> TrialConfig:
    return TrialConfig.from_dict({"dataset": "catsdogs", "data": "synthetic", "conv_channels": [6, 8],
                                  "hidden": 10, "epochs_pretrain": 2, "epochs_finetune": 2, "patience": 2,
                                  "batch_size": 16, **settings})


def test_a_cnn_pack_gives_every_member_its_single_run(tmp_path, monkeypatch):
    data = _image_data()
    # the photos loader is not needed to test batching
    monkeypatch.setattr(pipeline, "load_data", lambda cfg, cache=None: Data(**vars(data)))
    cfgs = [_cnn_config(pruner="filters", filters_frac=0.5, seed=0),
            _cnn_config(pruner="distinctiveness", filters_pruned=2, seed=0),
            _cnn_config(pruner="threshold", filters_pruned=[1, 3], lr=3e-3, seed=1),
            _cnn_config(pruner="none", seed=1)]
    single, packed = _run_both(cfgs, tmp_path)
    for a, b in zip(single, packed):
        _assert_rows_match(a, b, n_test=len(data.test_y))
    # Both sides failing alike would also "match": every member must have run.
    assert {r["status"] for rows in single + packed for r in rows} == {"ok"}


def test_each_members_rows_are_handed_over_the_moment_it_finishes(tmp_path):
    cfgs = [ffn_config(pruner="threshold", cycles=1), ffn_config(pruner="threshold", cycles=3),
            ffn_config(pruner="none", epochs_finetune=1)]  # alone in its population: a plain trial
    order = []
    rows = run_pack(cfgs, Workdirs(tmp_path), on_member_done=lambda i, member_rows: order.append((i, len(member_rows))))
    assert order == [(0, 1), (1, 3), (2, 1)] and [len(r) for r in rows] == [1, 3, 1]


def test_a_fault_of_the_machine_in_one_member_raises_after_the_finished_members_are_handed_over(tmp_path, monkeypatch):
    cfgs = [ffn_config(pruner="threshold", cycles=1), ffn_config(pruner="threshold", threshold_factor=0.5, cycles=2)]
    record = TrialState.record

    def disk_full_at_cycle_2(self, cycle, wall):
        if cycle == 2:
            raise OSError(28, "No space left on device")
        return record(self, cycle, wall)

    monkeypatch.setattr(TrialState, "record", disk_full_at_cycle_2)
    handed = []
    with pytest.raises(OSError):
        run_pack(cfgs, Workdirs(tmp_path), on_member_done=lambda i, rows: handed.append(i))
    assert handed == [0]  # the finished member's rows were out before the fault; none made up for member 1


def test_a_fault_in_the_code_of_a_fine_tuning_stage_is_an_error_row_for_each_member_in_it(tmp_path, monkeypatch):
    cfgs = [ffn_config(pruner="threshold", cycles=1), ffn_config(pruner="threshold", threshold_factor=0.5, cycles=2),
            ffn_config(pruner="none", cycles=2)]
    real = population.train_population

    def broken_in_cycle_2(pop, data, seeds, **kwargs):
        if kwargs["desc"].startswith("fine-tune 2"):
            return {}["no such key"]
        return real(pop, data, seeds, **kwargs)

    monkeypatch.setattr(population, "train_population", broken_in_cycle_2)
    rows = run_pack(cfgs, Workdirs(tmp_path))
    # What run_trial gives for a fault in the code: one error row with the traceback, not a raise
    # that would take the finished member's rows and the others' with it.
    assert [r["status"] for r in rows[0]] == ["ok"]
    for member in rows[1:]:
        assert [r["status"] for r in member] == ["error"]
        assert member[0]["error"].startswith("Traceback") and "KeyError" in member[0]["error"]


# The FFN trains with the compiled epoch kernel where a C compiler is available, else with the
# batched torch step: both must follow the single runs.
_STEPS = ["kernel", "torch"]


@pytest.fixture(params=_STEPS)
def ffn_step(request, monkeypatch):
    if request.param == "kernel" and ffn_kernel.load() is None:
        pytest.skip("no C compiler for the FFN kernel")
    if request.param == "torch":
        monkeypatch.setattr(batched.ffn_kernel, "load", lambda: None)
    return request.param


def _ffn(activation: str, seed: int = 0) -> FFN:
    torch.manual_seed(seed)
    return FFN(8, 6, 3, activation=activation)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_population_training_follows_each_members_single_trajectory(optimizer, activation, ffn_step):
    data = random_data(n=200, features=8)
    cfgs = [TrialConfig.from_dict({"optimizer": optimizer, "lr": lr, "weight_decay": wd, "momentum": m})
            for lr, wd, m in ((1e-2, 0.0, 0.9), (3e-3, 1e-2, 0.5), (1e-2, 0.0, 0.0))]
    models = [_ffn(activation, seed=k) for k in range(3)]
    masks = [Masks(m) for m in models]
    masks[1].prune("fc1.weight", models[1].fc1.weight.abs() < 0.2)
    masks[2].prune("fc1.bias", torch.arange(6) < 2)
    masks[2].prune("fc2.weight", models[2].fc2.weight.abs() < 0.1)
    for model, mask in zip(models, masks):
        mask.apply(model)
    alone = [_ffn(activation) for _ in models]
    for model, copy, mask, cfg, seed in zip(models, alone, masks, cfgs, (5, 6, 5)):
        copy.load_state_dict(model.state_dict())
        train(copy, data, cfg, epochs=3, seed=seed, masks=mask, progress=False)
    pop = Population(models, masks, cfgs)
    assert train_population(pop, data, [5, 6, 5], epochs=3, batch_size=32).failures == {}
    pop.write_back(models)
    for model, copy, mask in zip(models, alone, masks):
        for (name, p), q in zip(model.named_parameters(), copy.parameters()):
            torch.testing.assert_close(p, q, atol=WEIGHT_ATOL, rtol=0)
            assert not p[~mask[name]].any(), f"{name}: a pruned weight moved"
    for moments in (pop.optimizer.exp_avg, pop.optimizer.exp_avg_sq):
        for stacked, keep in zip(moments, pop.keep):
            if keep is not None:
                assert not stacked[keep == 0].any(), "optimiser state of a pruned weight moved"


def test_a_member_diverging_mid_epoch_fails_with_its_first_bad_loss(ffn_step):
    data = random_data(n=200, features=8)
    cfgs = [TrialConfig.from_dict({"optimizer": "sgd", "lr": lr}) for lr in (1e-2, 1e38, 1e-2)]
    models = [small_ffn(seed=k) for k in range(3)]
    alone = small_ffn()
    alone.load_state_dict(models[1].state_dict())
    with pytest.raises(TrainingDiverged) as raised:
        train(alone, data, cfgs[1], epochs=2, seed=1, progress=False)
    pop = Population(models, [None] * 3, cfgs)
    failures = train_population(pop, data, [0, 1, 2], epochs=2, batch_size=32).failures
    assert list(failures) == [1] and pop.size == 2
    epoch, loss = failures[1]
    assert f"loss became {loss} in epoch {epoch}" in str(raised.value)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_member_with_removed_units_trains_bit_for_bit_as_its_compacted_network(optimizer):
    """The kernel leaves a removed unit out of its sums (a member that lost half its units
    trains in about half the time): what it computes must be exactly what the smaller network
    computes, and the removed units' weights must stay zero."""
    if ffn_kernel.load() is None:
        pytest.skip("no C compiler for the FFN kernel")
    data = random_data(n=200, features=8)
    cfg = TrialConfig.from_dict({"optimizer": optimizer, "lr": 1e-2, "weight_decay": 1e-2, "momentum": 0.9})
    torch.manual_seed(0)
    full = FFN(8, 13, 3, activation="tanh")  # 13 units: the kept ones fall in other row blocks of 4
    masks = Masks(full)
    masks.prune("fc1.weight", full.fc1.weight.abs() < 0.05)  # unstructured zeros stay in both
    apply_removal(full, masks, Removal(units={"fc1": [0, 3, 4, 5, 11]}))
    untrained = full.fc1.weight.detach().clone()
    small = compact(full, masks)
    small_masks = Masks(small)
    for name, param in small.named_parameters():
        small_masks.prune(name, param == 0)
    live = live_units(masks, full.unit_layers[0])
    assert len(live) == 8
    pops = [Population([full], [masks], [cfg]), Population([small], [small_masks], [cfg])]
    for pop in pops:
        train_population(pop, data, [3], epochs=3, batch_size=32, kernel="c")
    pops[0].write_back([full])
    pops[1].write_back([small])
    assert torch.equal(full.fc1.weight[live], small.fc1.weight) and torch.equal(full.fc1.bias[live], small.fc1.bias)
    assert torch.equal(full.fc2.weight[:, live], small.fc2.weight) and torch.equal(full.fc2.bias, small.fc2.bias)
    removed = torch.ones(13, dtype=torch.bool)
    removed[live] = False
    assert not full.fc1.weight[removed].any() and not full.fc2.weight[:, removed].any()
    assert not full.fc1.weight.equal(untrained)  # it did train


def test_population_training_of_cnns_flips_each_members_own_images():
    data = _image_data()
    cfg = _cnn_config()
    models = [small_cnn(seed=k) for k in range(2)]
    masks = [Masks(m) for m in models]
    masks[0].prune("conv1.weight", torch.arange(6)[:, None, None, None].expand(6, 3, 5, 5) < 2)
    for model, mask in zip(models, masks):
        mask.apply(model)
    alone = [small_cnn() for _ in models]
    for model, copy, mask, seed in zip(models, alone, masks, (1, 2)):
        copy.load_state_dict(model.state_dict())
        train(copy, data, cfg, epochs=2, seed=seed, masks=mask, progress=False)
    pop = Population(models, masks, [cfg, cfg])
    train_population(pop, data, [1, 2], epochs=2, batch_size=cfg.batch_size)
    pop.write_back(models)
    for model, copy in zip(models, alone):
        for p, q in zip(model.parameters(), copy.parameters()):
            torch.testing.assert_close(p, q, atol=WEIGHT_ATOL, rtol=0)


def test_pack_size_follows_the_memory_budget():
    cfg = ffn_config()
    assert members_that_fit(cfg, "cpu", budget_bytes=10 * member_bytes(cfg)) == 10
    assert members_that_fit(cfg, "cpu", budget_bytes=1) == 1
    assert 1 <= members_that_fit(cfg, "cpu") <= population._CPU_CAP
    cnn = _cnn_config(conv_channels=[16, 32], hidden=128, batch_size=32)
    assert member_bytes(cnn) > 10 * member_bytes(cfg)  # conv activations dominate


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_non_finite_weights_diverge_as_in_the_torch_step(activation, monkeypatch):
    """Edge cases of the kernel's arithmetic (clamped exp, padding of a short last batch, weight
    decay 0 times an infinite weight) must flag exactly the members torch flags."""
    if ffn_kernel.load() is None:
        pytest.skip("no C compiler for the FFN kernel")
    data = random_data(n=70, features=8)

    def failures():
        models = [_ffn(activation, seed=0) for _ in range(4)]
        with torch.no_grad():
            for model, bad in zip(models[1:], (float("nan"), float("inf"), -float("inf"))):
                model.fc1.weight[0, 0] = bad
        pop = Population(models, [None] * 4, [TrialConfig.from_dict({})] * 4)
        return train_population(pop, data, [0, 1, 2, 3], epochs=2, batch_size=32).failures

    kernel = failures()
    monkeypatch.setattr(batched.ffn_kernel, "load", lambda: None)
    assert {k: v[0] for k, v in kernel.items()} == {k: v[0] for k, v in failures().items()}


def test_a_fractional_gpu_trial_sizes_its_pack_from_its_share_of_the_gpu(monkeypatch):
    cfg = ffn_config()
    per_member = member_bytes(cfg)
    # A 16 GB GPU, 12 GB of it free: a quarter-GPU trial budgets 80% of 4 GB, a whole one 80% of 12.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (12 * 2**30, 16 * 2**30))
    once = population.shared_bytes(cfg)  # the data and one member's pruning transient
    assert members_that_fit(cfg, "cuda", gpu_share=0.25) == (int(0.8 * 4 * 2**30) - once) // per_member
    assert members_that_fit(cfg, "cuda") == (int(0.8 * 12 * 2**30) - once) // per_member


def _oom_above(monkeypatch, most: int) -> list[int]:
    """A fault hook: fine-tuning more than `most` members at once runs out of memory, as a GPU
    would. Returns the sizes of the populations that were tried."""
    tried = []
    real = population.train_population

    def limited(pop, data, seeds, **kwargs):
        if kwargs["desc"].startswith("pretrain"):  # pretraining's populations are on the CPU only
            return real(pop, data, seeds, **kwargs)
        tried.append(len(seeds))
        if tried[-1] > most:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pop, data, seeds, **kwargs)

    monkeypatch.setattr(population, "train_population", limited)
    return tried


def test_out_of_memory_splits_the_population_and_every_member_still_gets_its_single_run(tmp_path, monkeypatch):
    cfgs = [ffn_config(pruner="threshold", threshold_factor=f, cycles=2) for f in (0.5, 0.75, 1.0, 1.25, 1.5)]
    single = [run_trial(cfg, Workdirs(tmp_path / "single"), trial_id=f"t{i}", progress=False)
              for i, cfg in enumerate(cfgs)]
    tried = _oom_above(monkeypatch, most=2)
    packed = run_pack(cfgs, Workdirs(tmp_path / "pack"), trial_ids=[f"t{i}" for i in range(len(cfgs))])
    # 5 fails, 2 fits, then 2 and 1; cycle 2 starts at the size that fitted.
    assert tried == [5, 2, 2, 1, 2, 2, 1]
    for a, b in zip(single, packed):
        _assert_rows_match(a, b, n_test=120)
    assert {r["status"] for rows in packed for r in rows} == {"ok"}


def test_a_member_that_does_not_fit_alone_is_a_fault_of_the_machine_not_a_row(tmp_path, monkeypatch):
    from prunerlib.errors import EnvironmentFault

    cfgs = [ffn_config(pruner="threshold", threshold_factor=f) for f in (0.5, 1.0)]
    _oom_above(monkeypatch, most=0)
    handed = []
    with pytest.raises(EnvironmentFault, match="out of cpu memory fine-tuning one ffn alone"):
        run_pack(cfgs, Workdirs(tmp_path), on_member_done=lambda i, rows: handed.append(rows))
    assert handed == []


def _peak_bytes(fn):
    """Peak of the CPU memory torch allocates while `fn` runs (what it returns is kept alive
    through the peak), from the profiler's per-op allocations in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        kept = fn()
    total = peak = 0
    for event in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        total += event.self_cpu_memory_usage
        peak = max(peak, total)
    return peak, kept


def _fine_tuning_peak(cfg: TrialConfig, data: Data, k: int) -> int:
    """Bytes k pruned members hold at the peak of a population step: their trial states, the
    population, and the step itself."""
    from prunerlib.models import build_model
    from prunerlib.pretrained import PretrainResult

    def trials():
        states = []
        for seed in range(k):
            member = cfg.replace(seed=seed)
            with torch.random.fork_rng(devices=[]):
                model = build_model(member, data.in_features, data.classes)
            states.append(TrialState(member, data, model, PretrainResult(0.5, 0.5, 0.5, 1, 0.0)))
        return states

    held, states = _peak_bytes(trials)
    for state in states:
        state.prune(1)
    stacked, pop = _peak_bytes(lambda: Population([s.model for s in states], [s.masks for s in states],
                                                  [s.cfg for s in states]))
    b, table = cfg.batch_size, pop.inputs(data.train_x)
    idx = torch.stack([torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(i))[:b]
                       for i in range(k)])

    def step():
        x = table.index_select(0, idx.flatten()).view(k, b, *table.shape[1:])
        if data.flip:
            x = torch.where((torch.rand(k, b) < 0.5)[:, :, None, None, None], x.flip(-1), x)
        return pop.step(x, data.train_y[idx])

    return held + stacked + _peak_bytes(step)[0]


@pytest.mark.parametrize("model", ["ffn", "cnn"])
def test_member_bytes_covers_what_a_member_really_holds_at_a_fine_tuning_step(model):
    """Per member: (peak with 6 members - peak with 2) / 4, on data of the real sizes. Before
    pruning inputs became indices a CNN member held 28 MB against an estimate of 15.7 MB."""
    g = torch.Generator().manual_seed(0)
    if model == "cnn":
        x, y = torch.randn(1800, 3, 32, 32, generator=g), torch.randint(0, 2, (1800,), generator=g)
        data = Data(x, y, x[:200], y[:200], x[:400], y[:400], classes=2, flip=True)
        cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": "photos", "pruner": "filters",
                                     "filters_frac": 0.25, "device": "cpu"})
    else:
        x, y = torch.randn(3600, 40, generator=g), torch.randint(0, 3, (3600,), generator=g)
        data = Data(x, y, x[:400], y[:400], x[:1000], y[:1000], classes=3, flip=False)
        cfg = TrialConfig.from_dict({"pruner": "distinctiveness", "device": "cpu"})
    measured = (_fine_tuning_peak(cfg, data, 6) - _fine_tuning_peak(cfg, data, 2)) / 4
    # Enough, and not so much more that a GPU is left idle.
    assert measured <= member_bytes(cfg) <= 1.6 * measured, (measured, member_bytes(cfg))


def test_a_member_keeps_its_pruning_inputs_as_indices_into_the_shared_data():
    data = random_data(n=256, features=8)
    cfg = TrialConfig.from_dict({"pruner": "distinctiveness", "distinct_max_patterns": 100})
    from prunerlib.pretrained import PretrainResult

    state = TrialState(cfg, data, small_ffn(), PretrainResult(0.5, 0.5, 0.5, 1, 0.0))
    seen = []
    decide = state.pruners[0].decide
    state.pruners[0].decide = lambda ctx: seen.append(ctx.inputs.clone()) or decide(ctx)
    state.prune(1)
    assert state.ctx.inputs is None  # released once the pruners have decided
    assert state.sample.dtype == torch.int64 and state.sample.shape == (100,)
    assert torch.equal(seen[0], data.train_x[state.sample])
