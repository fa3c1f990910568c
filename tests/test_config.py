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

