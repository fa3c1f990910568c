from prunerlib.population import population_key
from prunerlib.sweep.plan import config_text, grid_packs, plan_text, search_batch, slots
from prunerlib.sweep.spec import parse_spec

SPEC = {
    "name": "p", "fixed": {"dataset": "waveform"}, "seeds": [0, 1, 2],
    "grid": [{"pruner": "distinctiveness", "angle_cutoff": [10, 20], "attributes": [21, 40]},
             {"pruner": "threshold", "threshold_factor": 1.0, "attributes": [21, 40]},
             {"pruner": "random", "match": "threshold", "threshold_factor": 1.0, "attributes": [21, 40]}],
}


def test_auto_packs_hold_one_population_each_and_fill_every_slot():
    spec = parse_spec(SPEC)  # 2 populations (21 and 40 attributes) of 12 configurations
    assert sorted(len(p.members) for p in grid_packs(spec, parallel=2)) == [12, 12]  # a slot each
    packs = grid_packs(spec, parallel=4)
    assert sorted(len(p.members) for p in packs) == [6, 6, 6, 6]
    assert sum(len(p.members) for p in packs) == len(spec.grid) == 24
    for pack in packs:
        assert len({population_key(cfg) for cfg in pack.members}) == 1
    # Ordered by pretraining key: the two packs of a population pretrain different models.
    forty = [p for p in packs if p.members[0].attributes == 40]  # 2 packs of 6 over 3 seeds
    keys = [{cfg.pretrain_key() for cfg in p.members} for p in forty]
    assert len(keys[0] | keys[1]) == 3 and len(keys[0] & keys[1]) <= 1
    assert len({p.label for p in packs}) == len(packs)


def test_a_fixed_pack_size_is_kept_and_single_packs_have_short_labels():
    packs = grid_packs(parse_spec({**SPEC, "pack_size": 1}))
    labels = [p.label for p in packs]
    assert len(packs) == 24 and len(set(labels)) == 24 and max(map(len, labels)) <= 24
    assert any(label.endswith(" dist10 a21 s0") for label in labels)
    assert any(label.endswith(" rand~thr1 a40 s2") for label in labels)


def test_slots_follow_cpus_gpus_and_the_concurrency_cap():
    spec = parse_spec({**SPEC, "resources": {"cpu": 2, "gpu": 0.5}})
    assert slots(spec, cpus=16, gpus=1) == 2 and slots(spec, cpus=16, gpus=4) == 8
    assert slots(parse_spec({**SPEC, "max_concurrent": 3}), cpus=16, gpus=0) == 3


def test_the_dry_run_lists_every_trial_and_the_resource_plan():
    spec = parse_spec({**SPEC, "resources": {"cpu": 2}, "max_concurrent": 4})
    text = plan_text(spec, cpus=8)
    for cfg in spec.grid:
        assert config_text(cfg) in text
    assert "24 trial configuration(s) in 4 Tune trial(s) (pack_size auto)" in text  # 4 slots
    assert "2 CPU per Tune trial; 4 at once on 8 CPU(s)" in text
    assert "keeps: each trial's final model" in text and "latency timed at batch 256 and 1" in text
    quiet = plan_text(parse_spec({**SPEC, "save_models": "none", "measure_latency": False}))
    assert "keeps: no model" in quiet and "latency not timed" in quiet


def test_a_search_asks_for_batches_of_points():
    spec = parse_spec({"name": "s", "seeds": [0, 1], "fixed": {"pruner": "threshold"}, "search": {
        "sampler": "tpe", "num_samples": 40, "objectives": {"val_acc_finetuned": "max"},
        "space": {"threshold_factor": {"low": 0.5, "high": 2, "log": True}}}})
    assert search_batch(spec, parallel=2) == 5  # 4 rounds of results per slot
    assert search_batch(parse_spec({**spec.raw, "pack_size": 6}), parallel=2) == 3  # 6 configs = 3 points × 2 seeds
    text = plan_text(spec, cpus=2)
    assert "Optuna tpe sampler (seed 0), 40 point(s) × 2 seed(s) = 80 trial configuration(s), 5 point(s) per Tune " \
           "trial" in text
    assert "threshold_factor: log-range [0.5, 2]" in text and "val_acc_finetuned (max)" in text


def test_the_dry_run_says_when_a_search_repeats_itself_and_how_the_data_is_split():
    search = {"sampler": "nsga2", "num_samples": 32, "sampler_options": {"population_size": 8}, "seed": 3,
              "objectives": {"val_acc_finetuned": "max"}, "space": {"threshold_factor": {"low": 0.5, "high": 2}}}
    spec = parse_spec({"name": "s", "seeds": [0, 1], "fixed": {"pruner": "threshold", "data_seed": "per_seed"},
                       "search": search})
    text = plan_text(spec, cpus=2)
    assert "Optuna nsga2 sampler (seed 3, population_size 8), 32 point(s)" in text
    assert "asked in rounds of 2 Tune trial(s), each round after every result of the last: the same points on " \
           "every fresh run with 2 slot(s) at once" in text
    assert "data split: each seed its own (data_seed = seed)" in text
    assert "data split: data_seed 0 for every seed (seeds vary training only)" in plan_text(parse_spec(SPEC), cpus=2)


def test_gpu_packs_are_not_capped_by_the_drivers_cpu_budget():
    # 300 FFN configurations, one slot: on the CPU a pack holds at most 128 of them; a GPU
    # trial's pack is split by run_pack on the worker, against the memory of its GPU share.
    spec = {"name": "big", "fixed": {"dataset": "waveform", "device": "cpu"}, "seeds": list(range(3)),
            "grid": [{"pruner": "threshold", "threshold_factor": [0.25 + 0.01 * i for i in range(100)]}]}
    assert max(len(p.members) for p in grid_packs(parse_spec(spec), parallel=1)) <= 128
    gpu = parse_spec({**spec, "fixed": {"dataset": "waveform"}, "resources": {"cpu": 1, "gpu": 0.5}})
    assert [len(p.members) for p in grid_packs(gpu, parallel=1)] == [300]
