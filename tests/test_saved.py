"""Saved pruned models: a trial's final network, compacted, reloads and computes what the trial's
masked network computed."""

import pytest
import torch

import prunerlib
from prunerlib import saved
from prunerlib.config import TrialConfig
from prunerlib.datasets import load_data
from prunerlib.errors import ConfigError
from prunerlib.masks import Masks
from prunerlib.pipeline import TrialState, Workdirs, run_pack, run_trial
from prunerlib.pretrained import load_or_pretrain
from prunerlib.training import accuracy
from tests.helpers import ffn_config


def _saving(tmp_path, **kept):
    return Workdirs(tmp_path / "pretrained", models=tmp_path / "models", results=tmp_path, **kept)


def _predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("settings", [
    {"pruner": "threshold", "threshold_factor": 1.0},  # unstructured: the matrices keep their zeros
    {"pruner": "distinctiveness", "angle_cutoff": 60.0},  # units removed (38 %): smaller matrices
    {"pruner": "random", "match": "threshold", "threshold_factor": 1.0, "cycles": 2},
])
def test_the_saved_model_reproduces_the_trials_test_predictions_and_accuracy(tmp_path, settings):
    cfg = ffn_config(**settings)
    data = load_data(cfg)
    # The trial's own masked network, to compare the reload with prediction by prediction.
    model, pre = load_or_pretrain(cfg, data, tmp_path / "pretrained", torch.device("cpu"), progress=False)
    rows = run_trial(cfg, _saving(tmp_path), trial_id="t", progress=False)
    final = rows[-1]
    assert final["status"] == "ok" and final["model_path"] == "models/t.pt"
    loaded = prunerlib.load_pruned(tmp_path / final["model_path"])
    assert not loaded.training
    assert accuracy(loaded, data.test_x, data.test_y) == final["acc_finetuned"]
    assert accuracy(loaded, data.val_x, data.val_y) == final["val_acc_finetuned"]
    assert sum(int((p != 0).sum()) for p in loaded.parameters()) == final["params_nonzero"]
    assert loaded.prunerlib["config_hash"] == cfg.config_hash() and loaded.prunerlib["about"]["trial_id"] == "t"
    assert loaded.prunerlib["about"]["acc_finetuned"] == final["acc_finetuned"]
    assert loaded.prunerlib["class_names"] == list(data.class_names)
    hidden = loaded.fc1.out_features
    assert hidden == round(50 * (1 - final["units_removed_frac"]))  # removed units are gone, not zeroed
    del model, pre


def test_a_saved_model_predicts_as_the_masked_network_it_was_compacted_from(tmp_path):
    cfg = ffn_config(pruner="distinctiveness", angle_cutoff=60.0)
    data = load_data(cfg)
    model, pre = load_or_pretrain(cfg, data, tmp_path, torch.device("cpu"), progress=False)
    trial = TrialState(cfg, data, model, pre)
    assert trial.prune(1)
    saved.save_pruned(tmp_path / "m.pt", trial.model, trial.masks, cfg, input_shape=trial.input_shape,
                      class_names=data.class_names, preprocessing=data.preprocessing, about={})
    loaded = prunerlib.load_pruned(tmp_path / "m.pt")
    assert loaded.fc1.out_features < 50
    assert torch.equal(_predictions(loaded, data.test_x), _predictions(trial.model, data.test_x))
    with torch.no_grad():
        assert torch.allclose(loaded(data.test_x), trial.model(data.test_x), atol=1e-5)


def test_a_cnn_with_half_its_filters_removed_saves_smaller_and_reproduces_its_accuracy(tmp_path, catsdogs_dir):
    cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": str(catsdogs_dir), "train_per_class": 40,
                                 "test_per_class": 20, "epochs_pretrain": 1, "epochs_finetune": 1, "seed": 0,
                                 "pruner": "filters", "filters_frac": 0.5, "filter_criterion": "l1"})
    final = run_trial(cfg, _saving(tmp_path), trial_id="cnn", progress=False)[-1]
    loaded = prunerlib.load_pruned(tmp_path / final["model_path"])
    assert (loaded.conv1.out_channels, loaded.conv2.out_channels) == (8, 16)
    assert loaded.fc1.in_features == 16 * 5 * 5
    data = load_data(cfg)
    assert accuracy(loaded, data.test_x, data.test_y) == final["acc_finetuned"]
    dense = next((tmp_path / "pretrained").glob("*/model.pt"))
    assert (tmp_path / "models" / "cnn.pt").stat().st_size < 0.6 * dense.stat().st_size
    # What a user needs to feed it raw pixels: the trial's own normalisation reproduces its inputs.
    pre = loaded.prunerlib["preprocessing"]
    assert pre["mean"].shape == (3, 1, 1) and loaded.prunerlib["class_names"] == ["cat", "dog"]


def test_preprocessing_turns_raw_waveform_attributes_into_the_trials_inputs(tmp_path):
    from prunerlib import waveform
    from prunerlib.datasets import stratified_split

    cfg = ffn_config(pruner="none")
    final = run_trial(cfg, _saving(tmp_path), trial_id="t", progress=False)[-1]
    loaded = prunerlib.load_pruned(tmp_path / final["model_path"])
    x, y = waveform.generate(cfg.n, cfg.attributes, cfg.data_seed)
    _, test = stratified_split(y, cfg.test_frac, cfg.data_seed)
    raw = torch.from_numpy(x[test])
    inputs = saved.preprocess(raw, loaded.prunerlib["preprocessing"])
    assert torch.allclose(inputs, load_data(cfg).test_x, atol=1e-6)
    assert ((_predictions(loaded, inputs) == torch.from_numpy(y[test])).float().mean().item()
            == pytest.approx(final["acc_finetuned"]))


def test_every_cycle_is_kept_when_asked_and_the_final_file_is_the_final_rows_model(tmp_path):
    # Cycle 2 falls too far (max_acc_drop 0, no fine-tuning): cycle 1 stays final, and its model
    # is <trial_id>.pt while cycle 2's own model is still kept beside it.
    cfg = ffn_config(pruner="threshold", threshold_factor=1.5, cycles=4, max_acc_drop=0.0, epochs_finetune=0)
    rows = run_trial(cfg, _saving(tmp_path, save_models="all_cycles"), trial_id="t", progress=False)
    assert [(r["cycle"], r["final"], r["model_path"]) for r in rows] == [
        (1, True, "models/t.pt"), (2, False, "models/t.cycle2.pt")]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["t.cycle2.pt", "t.pt"]
    data = load_data(cfg)
    for row in rows:
        model = prunerlib.load_pruned(tmp_path / row["model_path"])
        assert model.prunerlib["about"]["cycle"] == row["cycle"]
        assert accuracy(model, data.test_x, data.test_y) == row["acc_finetuned"]


@pytest.mark.parametrize("save_models", ["final", "none"])
def test_save_models_final_keeps_one_file_and_none_keeps_nothing(tmp_path, save_models):
    rows = run_trial(ffn_config(pruner="threshold", cycles=2), _saving(tmp_path, save_models=save_models),
                     trial_id="t", progress=False)
    files = sorted(p.name for p in (tmp_path / "models").glob("*")) if (tmp_path / "models").exists() else []
    if save_models == "final":
        assert files == ["t.pt"] and [r.get("model_path") for r in rows] == [None, "models/t.pt"]
    else:
        assert files == [] and all(r.get("model_path") is None for r in rows)


def test_population_members_each_save_their_own_model(tmp_path):
    cfgs = [ffn_config(pruner="threshold", threshold_factor=f) for f in (0.5, 1.0, 1.5)]
    packed = run_pack(cfgs, _saving(tmp_path), trial_ids=["a", "b", "c"])
    data = load_data(cfgs[0])
    for rows in packed:
        final = rows[-1]
        loaded = prunerlib.load_pruned(tmp_path / final["model_path"])
        assert loaded.prunerlib["config_hash"] == final["config_hash"]
        assert accuracy(loaded, data.test_x, data.test_y) == final["acc_finetuned"]


def test_a_network_pruned_to_nothing_saves_and_loads(tmp_path):
    final = run_trial(ffn_config(pruner="threshold", threshold_factor=50.0), _saving(tmp_path), trial_id="t",
                      progress=False)[-1]
    assert final["units_removed_frac"] == 1.0
    loaded = prunerlib.load_pruned(tmp_path / final["model_path"])
    assert loaded.fc1.out_features == 0
    assert accuracy(loaded, load_data(ffn_config()).test_x, load_data(ffn_config()).test_y) == final["acc_finetuned"]


# --- files that are not what they claim --------------------------------------------------------
@pytest.fixture
def model_file(tmp_path):
    run_trial(ffn_config(pruner="threshold"), _saving(tmp_path), trial_id="t", progress=False)
    return tmp_path / "models" / "t.pt"


def test_a_file_of_another_format_version_is_refused_with_one_line(model_file):
    payload = torch.load(model_file, weights_only=True)
    payload["version"] = saved.VERSION + 1
    torch.save(payload, model_file)
    with pytest.raises(ConfigError, match=f"format version {saved.VERSION + 1}; this prunerlib reads version "
                                          f"{saved.VERSION}"):
        prunerlib.load_pruned(model_file)


def test_a_truncated_file_a_plain_state_dict_and_a_missing_file_are_clear_errors(model_file, tmp_path):
    raw = model_file.read_bytes()
    model_file.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ConfigError, match="not a readable model file"):
        prunerlib.load_pruned(model_file)
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match="not a prunerlib pruned-model file"):
        prunerlib.load_pruned(tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match="no such model file"):
        prunerlib.load_pruned(tmp_path / "nothing.pt")


def test_loading_runs_no_pickled_code(model_file):
    # A file that smuggles an object in is refused by torch.load(weights_only=True), not run.
    payload = torch.load(model_file, weights_only=True)
    payload["about"]["evil"] = Masks  # a class: only a full unpickler would import and call it
    torch.save(payload, model_file)
    with pytest.raises(ConfigError, match="not a readable model file"):
        prunerlib.load_pruned(model_file)
