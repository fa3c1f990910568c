"""`prunerlib sensitivity` on really pretrained tiny networks: one layer at a time, every
criterion, rows that accumulate over seeds, and the criteria's agreement."""

import numpy as np
import pandas as pd
import pytest

from prunerlib.agreement import jaccard, spearman
from prunerlib.cli import main
from prunerlib.sensitivity import targets
from tests.helpers import context, random_data, small_ffn

WAVE = ["--dataset", "waveform", "--attributes", "21", "--n", "600", "--epochs-pretrain", "6", "--patience", "2",
        "--fractions", "0.25,0.5", "--quiet"]
KEY = ["seed", "layer", "what", "criterion", "fraction"]


def _scan(out, workdir, *flags):
    assert main(["sensitivity", *flags, "--out", str(out), "--workdir", str(workdir)]) == 0
    return pd.read_parquet(out / "sensitivity.parquet"), pd.read_parquet(out / "agreement.parquet")


@pytest.fixture(scope="module")
def wave(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wave")
    for seed in (0, 1):
        sens, agree = _scan(tmp / "scan", tmp / "work", *WAVE, "--seed", str(seed))
    return tmp, sens, agree


def test_each_structure_alone_by_each_criterion_at_each_fraction(wave):
    _, sens, _ = wave
    assert set(sens["fraction"]) == {0.25, 0.5}  # no fraction-0 row: the pretrained accuracy is a column
    assert set(map(tuple, sens[["what", "criterion"]].drop_duplicates().to_numpy())) == {
        ("units", "l1"), ("units", "mean_activation"), ("units", "apoz"), ("units", "random"),
        ("weights", "magnitude"), ("weights", "random")}
    half = sens[sens["fraction"] == 0.5]
    assert (half[half["what"] == "units"]["removed"] == 25).all()  # 50 hidden units
    assert (half[half["what"] == "weights"]["removed"] == 50 * 21 // 2).all()
    assert sens[["acc_val", "acc_test", "acc_val_pretrained"]].notna().all().all()
    assert sens["pretrain_key"].nunique() == 2 and sens["scan"].nunique() == 1  # two seeds of one scan
    # Removing half the hidden layer by any criterion costs something on at least one seed.
    assert (half["acc_val"] < half["acc_val_pretrained"]).any()


def test_random_criterion_differs_per_seed():
    model = small_ffn(in_features=21, hidden=50)
    ctx = context(model, random_data(features=21).train_x)
    for target in targets(model):  # units and weights of fc1
        drawn = {seed: target.scores("random", ctx, seed) for seed in (0, 1)}
        assert not np.array_equal(drawn[0], drawn[1])
        assert np.array_equal(drawn[0], target.scores("random", ctx, 0))  # but the same seed draws the same


def test_rerun_of_a_seed_replaces_its_rows(wave):
    tmp, sens, agree = wave
    again, again_agree = _scan(tmp / "scan", tmp / "work", *WAVE, "--seed", "1")
    assert len(again) == len(sens) and not again.duplicated(KEY).any()
    assert len(again_agree) == len(agree)
    # Deterministic: the rerun's numbers are the first run's (same pretrained model, same streams).
    first = sens.set_index(KEY).sort_index()[["removed", "acc_val", "acc_test"]]
    pd.testing.assert_frame_equal(again.set_index(KEY).sort_index()[["removed", "acc_val", "acc_test"]], first)


def test_agreement_rows_and_measures(wave):
    _, _, agree = wave
    pairs = agree[agree["criterion_a"] != "distinctiveness"]
    assert not (pairs["criterion_a"] == pairs["criterion_b"]).any()
    assert pairs["jaccard"].between(0, 1).all()
    dist = agree[agree["criterion_a"] == "distinctiveness"]
    assert set(dist["criterion_b"]) == {"l1", "mean_activation", "apoz", "random"} and dist["spearman"].isna().all()
    assert jaccard([3, 1, 2], [1, 2, 3]) == 1 and jaccard([1, 2], [3, 4]) == 0 and np.isnan(jaccard([], []))
    x = np.array([0.3, 0.1, 0.1, 0.9, 0.5])
    assert spearman(x, x) == pytest.approx(1) and spearman(x, -x) == pytest.approx(-1)
    assert spearman(x, x ** 3) == pytest.approx(1)  # ranks, not values
    assert np.isnan(spearman(x, np.ones(5)))  # a constant score (APoZ of sigmoid units) has no ranking


def test_cnn_conv_layers_and_hidden_layer(tmp_path, catsdogs_dir):
    sens, agree = _scan(tmp_path / "scan", tmp_path / "work", "--dataset", "catsdogs", "--data", str(catsdogs_dir),
                        "--train-per-class", "40", "--test-per-class", "20", "--image-size", "16",
                        "--conv-channels", "4,6", "--hidden", "16", "--epochs-pretrain", "2",
                        "--fractions", "0.5", "--criteria", "l1,random", "--seed", "0", "--quiet")
    removed = sens.groupby(["layer", "what"])["removed"].first().to_dict()
    assert removed == {("conv1", "filters"): 2, ("conv2", "filters"): 3, ("fc1", "units"): 8,
                       ("fc1", "weights"): 6 * 16 // 2}  # 16 px: one 1×1 map per conv2 filter
    assert set(agree["layer"]) == {"conv1", "conv2", "fc1"}


@pytest.mark.parametrize("flags, says", [
    (["--criteria", "l1,l2"], "--criteria: unknown criterion 'l2'; known: apoz, l1, magnitude, mean_activation, random"),
    (["--fractions", "0.5,1"], "--fractions: 1 is outside (0, 1)"),
    (["--fractions", "0"], "--fractions: 0 is outside (0, 1)"),
    (["--fractions", "half"], "--fractions: expected shares"),
    (["--data", "/nonexistent/waveform.data"], "data: /nonexistent/waveform.data does not exist"),
    (["--filters-frac", "0.5"], "--filters-frac: a sensitivity scan prunes one layer at a time"),
    (["--epochs-finetune", "3"], "--epochs-finetune: a sensitivity scan prunes one layer at a time"),
])
def test_bad_input_is_one_line(tmp_path, capsys, flags, says):
    code = main(["sensitivity", "--dataset", "waveform", "--out", str(tmp_path / "s"), "--workdir",
                 str(tmp_path / "w"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()  # refused before any work
