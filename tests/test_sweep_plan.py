from prunerlib.sweep.plan import describe, grid_packs, plan_text
from prunerlib.sweep.spec import parse_spec

SPEC = {
    "name": "p", "fixed": {"dataset": "waveform"}, "seeds": [0, 1, 2],
    "grid": [{"pruner": "distinctiveness", "angle_cutoff": [10, 20]},
             {"pruner": "threshold", "threshold_factor": 1.0},
             {"pruner": "random", "match": "threshold", "threshold_factor": 1.0}],
}


def test_packs_group_configurations_that_share_a_pretrained_model():
    spec = parse_spec({**SPEC, "pack_size": 3})
    packs = grid_packs(spec)
    assert sum(len(p.members) for p in packs) == len(spec.grid) == 12
    for pack in packs:
        assert len({cfg.pretrain_key() for cfg in pack.members}) == 1 and len(pack.members) <= 3
    assert len(packs) == 6  # 4 configurations per seed → packs of 3 and 1, for 3 seeds
    assert len({p.label for p in packs}) == len(packs)


def test_single_packs_have_short_unique_labels_tune_can_show():
    packs = grid_packs(parse_spec(SPEC))
    labels = [p.label for p in packs]
    assert len(set(labels)) == 12 and max(map(len, labels)) <= 24
    assert "p000 dist10 a40 s0" in labels and any("rand~thr1 a40" in label for label in labels)


def test_the_dry_run_lists_every_trial_and_the_resource_plan():
    spec = parse_spec({**SPEC, "resources": {"cpu": 2}, "max_concurrent": 8})
    text = plan_text(spec, cluster_cpus=8)
    for cfg in spec.grid:
        assert describe(cfg) in text
    assert "12 trial configuration(s) in 12 Tune trial(s)" in text
    assert "2 CPU per Tune trial; 4 at once on 8 CPU(s)" in text


def test_a_search_plan_names_the_sampler_space_and_objectives():
    spec = parse_spec({"name": "s", "seeds": [0, 1], "fixed": {"pruner": "threshold"}, "search": {
        "sampler": "tpe", "num_samples": 5, "objectives": {"acc_finetuned": "max"},
        "space": {"threshold_factor": {"low": 0.5, "high": 2, "log": True}}}})
    text = plan_text(spec)
    assert "Optuna tpe sampler, 5 point(s) × 2 seed(s) = 10 trial configuration(s)" in text
    assert "threshold_factor: log-range [0.5, 2]" in text and "acc_finetuned (max)" in text
