import dataclasses

import pytest

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError


def test_defaults_follow_the_dataset():
    wave = TrialConfig.from_dict({})
    assert (wave.model, wave.hidden, wave.attributes) == ("ffn", 50, 40)
    cnn = TrialConfig.from_dict({"dataset": "catsdogs", "data": "photos"})
    assert (cnn.model, cnn.hidden, cnn.attributes, cnn.batch_size) == ("cnn", 128, None, 32)


@pytest.mark.parametrize("settings, key", [
    ({"angle_cutoff": 120}, "angle_cutoff"),
    ({"angle_cutoff": 0}, "angle_cutoff"),
    ({"bogus": 1}, "bogus"),
    ({"lr": "fast"}, "lr"),
    ({"pruner": "magic"}, "pruner"),
    ({"attributes": 30}, "attributes"),
    ({"dataset": "catsdogs", "data": "d", "pruner": "filters", "filters_pruned": 99}, "filters_pruned: conv1 has 16"),
    ({"dataset": "catsdogs", "data": "d", "pruner": "filters", "filters_pruned": [1, 2, 3]},
     "filters_pruned: give one count or one per conv layer"),
    ({"dataset": "catsdogs", "data": "d", "pruner": "filters", "filters_frac": 1.0}, "filters_frac"),
    ({"dataset": "catsdogs", "data": "d", "pruner": "filters"}, "filters_pruned"),
    ({"dataset": "catsdogs"}, "data"),
    ({"pruner": "random"}, "match"),
    ({"pruner": "threshold", "match": "threshold"}, "match"),
    ({"filters_frac": 0.5}, "filters_pruned"),
    ({"dataset": "catsdogs", "data": "d", "pruner": "none", "filters_frac": 0.5}, "filters_pruned"),
    ({"model": "cnn"}, "model"),
    ({"cycles": 0}, "cycles"),
    ({"seed": 1.5}, "seed"),
    ({"remove_constant": "yes"}, "remove_constant"),
])
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(settings)
    assert str(err.value).startswith(key if ":" in key else f"{key}:")


def test_match_mapping_mirrors_the_named_settings():
    cfg = TrialConfig.from_dict({"pruner": "random", "match": {"pruner": "threshold", "threshold_factor": 0.5}})
    assert (cfg.match, cfg.threshold_factor, cfg.mirrored_pruner) == ("threshold", 0.5, "threshold")


def test_pretrain_key_ignores_pruning_settings_but_not_training_ones():
    base = TrialConfig.from_dict({"pruner": "threshold"})
    assert base.pretrain_key() == base.replace(pruner="distinctiveness", angle_cutoff=20.0).pretrain_key()
    assert base.pretrain_key() == base.replace(epochs_finetune=3, cycles=2).pretrain_key()
    assert base.pretrain_key() != base.replace(seed=1).pretrain_key()
    assert base.pretrain_key() != base.replace(lr=0.01).pretrain_key()
    assert base.config_hash() != base.replace(pruner="none").config_hash()


def test_filter_counts_from_fraction_or_count():
    from prunerlib.pruners.filters import filter_counts

    frac = TrialConfig.from_dict({"dataset": "catsdogs", "data": "d", "pruner": "filters", "filters_frac": 0.5})
    assert filter_counts(frac) == (8, 16)
    per_layer = TrialConfig.from_dict({"dataset": "catsdogs", "data": "d", "pruner": "filters", "filters_pruned": [2, 5]})
    assert filter_counts(per_layer) == (2, 5)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("key, value", [
    ("angle_cutoff", NAN), ("threshold_factor", NAN), ("threshold_factor", INF), ("max_acc_drop", NAN),
    ("lr", NAN), ("lr", INF), ("val_frac", NAN), ("test_frac", NAN), ("momentum", NAN),
    ("weight_decay", INF), ("weight_decay", NAN), ("min_delta", NAN), ("min_delta", -INF),
    ("filters_frac", NAN),
])
def test_nan_and_infinite_settings_are_refused(key, value):
    settings = {"dataset": "catsdogs", "data": "d", "pruner": "filters"} if key == "filters_frac" else {}
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({**settings, key: value})
    assert str(err.value).startswith(f"{key}: must be a finite number") and "\n" not in str(err.value)


@pytest.mark.parametrize("key, value", [
    ("seed", -1), ("data_seed", -3), ("seed", 2**32), ("data_seed", 10**20), ("n", 10**12), ("hidden", 10**9),
    ("cycles", 10**6), ("epochs_pretrain", 10**9), ("epochs_finetune", 10**9), ("batch_size", 10**9),
    ("patience", 10**9), ("image_size", 10**5), ("distinct_max_patterns", 10**12),
    ("train_per_class", 10**12), ("test_per_class", 10**12), ("lr", 10**400), ("threshold_factor", 10**400),
], ids=lambda v: str(v)[:12])
def test_integers_outside_their_sane_range_are_refused(key, value):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({key: value})
    assert str(err.value).startswith(f"{key}:") and len(str(err.value)) < 200


def test_conv_channels_have_a_sane_width():
    with pytest.raises(ConfigError, match="^conv_channels:"):
        TrialConfig.from_dict({"dataset": "catsdogs", "data": "d", "conv_channels": [16, 10**9]})


def test_an_empty_validation_slice_is_refused_even_with_fixed_pretraining():
    # Selection, max_acc_drop and the search all read validation accuracy.
    with pytest.raises(ConfigError, match="^val_frac: .*validation"):
        TrialConfig.from_dict({"val_frac": 0, "pretrain_stop": "fixed"})



# --------------------------------------------------------------------------- settings know their role
def _changed(cfg: TrialConfig, name: str) -> TrialConfig:
    """`cfg` with setting `name` moved to another valid value."""
    other = {"dataset": "waveform", "data": "/other/waveform.data", "attributes": 21, "n": 700, "test_frac": 0.3,
             "val_frac": 0.2, "data_seed": 3, "train_per_class": 7, "test_per_class": 5, "image_size": 20,
             "model": "ffn", "hidden": 9, "activation": "tanh", "conv_channels": [3, 5], "pruner": "threshold",
             "match": None, "distinct_max_patterns": 99, "cycles": 2, "max_acc_drop": 0.1, "seed": 4,
             "epochs_pretrain": 7, "pretrain_stop": "fixed", "patience": 9, "min_delta": 0.2,
             "epochs_finetune": 4, "batch_size": 8, "lr": 0.02, "optimizer": "sgd", "momentum": 0.5,
             "weight_decay": 0.01, "device": "cpu", "exact": True}
    changed = cfg.replace(**{name: other[name]})
    assert changed.to_dict()[name] != cfg.to_dict()[name], name
    return changed


def test_every_setting_has_a_role():
    from prunerlib.config import _ROLE_RULES, POPULATION_SETTINGS, PRETRAIN_SETTINGS, ROLES

    fields = [f.name for f in dataclasses.fields(TrialConfig) if f.name != "pruner_settings"]
    assert sorted(ROLES) == sorted(fields) and all(ROLES[name] in _ROLE_RULES for name in fields)
    assert {"seed", "lr", "hidden", "n", "batch_size"} <= set(PRETRAIN_SETTINGS)
    assert {"hidden", "batch_size", "epochs_finetune", "device"} <= set(POPULATION_SETTINGS)


def test_a_setting_left_out_of_the_pretrain_key_cannot_change_the_pretrained_model(tmp_path):
    """The dangerous direction: a setting outside the key that changed pretraining would make
    two configurations share a model only one of them should have."""
    import torch

    from prunerlib import registry
    from prunerlib.config import PRETRAIN_SETTINGS
    from prunerlib.datasets import load_data
    from prunerlib.pretrained import load_or_pretrain

    def pretrained(cfg: TrialConfig, store: str) -> dict:
        model, _ = load_or_pretrain(cfg, load_data(cfg), tmp_path / store, torch.device("cpu"), False)
        return model.state_dict()

    base = TrialConfig.from_dict({"pruner": "none", "n": 300, "epochs_pretrain": 2, "pretrain_stop": "fixed"})
    reference = pretrained(base, "base")
    outside = [n for n in base.to_dict() if n not in PRETRAIN_SETTINGS and n not in ("dataset", "model", "match")]
    assert {"cycles", "epochs_finetune", "distinct_max_patterns", "angle_cutoff"} <= set(outside)
    for name in outside:
        if registry.setting_owner(name):  # a pruner's setting: its owner must be the trial's pruner
            changed = base.replace(pruner=registry.setting_owner(name)) if registry.PRUNERS[
                registry.setting_owner(name)].models != ("cnn",) else None
            if changed is None:
                continue
            changed = changed.replace(**{name: _other_value(name)})
        else:
            changed = _changed(base, name)
        assert changed.pretrain_key() == base.pretrain_key(), name
        weights = pretrained(changed, name)
        assert all(torch.equal(weights[k], reference[k]) for k in reference), name


def _other_value(name: str):
    return {"angle_cutoff": 30.0, "merge": "outgoing", "remove_constant": True, "threshold_factor": 0.5,
            "threshold_stat": "std", "threshold_layers": "all_linear", "units_frac": 0.4}[name]


def test_every_setting_that_changes_the_result_is_a_column():
    from prunerlib import registry
    from prunerlib.config import column_settings
    from prunerlib.records import columns

    base = TrialConfig.from_dict({"pruner": "none", "data": "/some/waveform.data"})
    for name in base.to_dict():
        if name in ("dataset", "model", "match") or registry.setting_owner(name):
            continue
        if _changed(base, name).config_hash() != base.config_hash() and name != "device":  # the row's device says what ran
            assert name in column_settings() and name in columns(), name
    assert "distinct_max_patterns" in columns()
    assert set(registry.settings()) <= set(columns())
