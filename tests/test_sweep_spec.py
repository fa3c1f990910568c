import textwrap
from pathlib import Path

import pytest
import yaml

from prunerlib.cli import main
from prunerlib.sweep.search_spec import Range
from prunerlib.sweep.spec import SpecError, load_spec, parse_spec

GOOD = {
    "name": "t",
    "fixed": {"dataset": "waveform", "n": 300},
    "seeds": [0, 1],
    "grid": [
        {"pruner": "distinctiveness", "angle_cutoff": [10, 20]},
        {"pruner": "threshold", "threshold_factor": [0.5, 1.0, 1.5]},
        {"pruner": "none"},
    ],
}


def with_(**changes):
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = spec
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
    return spec


DELETE = object()
SEARCH = {"sampler": "nsga2", "sampler_options": {"population_size": 2}, "num_samples": 4,
          "objectives": {"val_acc_finetuned": "max"},
          "space": {"threshold_factor": {"low": 0.5, "high": 2.0}}}


def test_a_grid_expands_per_pruner_times_seeds():
    spec = parse_spec(GOOD)
    assert len(spec.grid) == (2 + 3 + 1) * 2
    cutoffs = {c.angle_cutoff for c in spec.grid if c.pruner == "distinctiveness"}
    factors = {c.threshold_factor for c in spec.grid if c.pruner == "threshold"}
    assert cutoffs == {10.0, 20.0} and factors == {0.5, 1.0, 1.5}
    assert {c.seed for c in spec.grid} == {0, 1} and all(c.n == 300 for c in spec.grid)


def test_a_search_spec_parses_ranges_and_choices():
    spec = parse_spec(with_(grid=DELETE, search={**SEARCH, "space": {
        "threshold_factor": {"low": 0.5, "high": 2.0, "log": True}, "threshold_stat": ["mean_abs", "std"]}}))
    assert spec.search.space["threshold_factor"] == Range(0.5, 2.0, log=True)
    assert spec.search.space["threshold_stat"] == ("mean_abs", "std") and not spec.grid and spec.seeds == (0, 1)


def test_what_a_sweep_keeps_and_measures_defaults_to_final_models_and_latency_at_256():
    assert (parse_spec(GOOD).save_models, parse_spec(GOOD).latency_batch) == ("final", 256)
    spec = parse_spec(with_(save_models="all_cycles", measure_latency=False, latency_batch=64))
    assert (spec.save_models, spec.latency_batch) == ("all_cycles", None)


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(with_(fixed={"dataset": "waveform", "data": "photos"}, grid=[{"pruner": "none"}]))
    assert spec.fixed["data"] == str(tmp_path / "photos")


MALFORMED = [
    (with_(colour="blue"), "colour: unknown key"),
    (with_(name="has space"), "name:"),
    (with_(name=DELETE), "name:"),
    (with_(fixed__lr="fast"), "fixed.lr: expected float"),
    (with_(fixed__no_such=1), "fixed.no_such: unknown trial setting"),
    (with_(grid=[]), "grid: must be a non-empty list"),
    (with_(grid__0={}), "grid[0]: empty sub-grid"),
    (with_(grid__0__angle_cutoff=[10, 120]), "grid[0].angle_cutoff[1]: must be in (0, 90)"),
    (with_(grid__0__angle_cutoff=0), "grid[0].angle_cutoff: must be in (0, 90)"),
    (with_(grid__1__angle_cutoff=15), "grid[1].angle_cutoff: applies to pruner distinctiveness only"),
    (with_(grid__1__threshold_factor=[]), "grid[1].threshold_factor: empty list"),
    (with_(grid__2__pruner="magic"), "grid[2].pruner: unknown pruner 'magic'"),
    (with_(grid__2__seed=3), "grid[2].seed: list seeds"),
    (with_(seeds=[]), "seeds: must be a non-empty list"),
    (with_(seeds=[0, "one"]), "seeds[1]: must be an integer"),
    (with_(seeds=[1, 1]), "seeds: repeats a seed"),
    (with_(grid=GOOD["grid"] + [{"pruner": "none"}]), "grid[3]: repeats a configuration of grid[2]"),
    (with_(fixed={"dataset": "catsdogs", "data": "/nonexistent/photos"}), "fixed.data: /nonexistent/photos does not exist"),
    (with_(grid__2={"pruner": "filters", "filters_pruned": 99}), "grid[2].filters_pruned:"),
    (with_(resources={"cpu": 0}), "resources.cpu: must be above 0"),
    (with_(resources={"gpus": 1}), "resources.gpus: unknown key"),
    (with_(resources={"gpu": 1.5}), "resources.gpu: a trial uses one GPU"),
    (with_(max_concurrent=0), "max_concurrent: must be at least 1"),
    (with_(pack_size="big"), "pack_size: must be auto or a whole number"),
    (with_(grid=DELETE), "grid: a spec needs a grid or a search"),
    (with_(search=SEARCH), "search: a spec runs a grid or a search, not both"),
    (with_(grid=DELETE, search={**SEARCH, "sampler": "bayes"}), "search.sampler: must be one of"),
    (with_(grid=DELETE, search={**SEARCH, "objectives": {"accuracy": "max"}}), "search.objectives.accuracy: not an objective"),
    (with_(grid=DELETE, search={**SEARCH, "objectives": {"val_acc_finetuned": "up"}}),
     "search.objectives.val_acc_finetuned: must be max or min"),
    (with_(grid=DELETE, search={**SEARCH, "objectives": {"filters_removed_frac": "max"}}),
     "search.objectives.filters_removed_frac: the Waveform FFN has no conv filters"),
    (with_(grid=DELETE, search={**SEARCH, "space": {"angle_cutoff": {"low": 5, "high": 95}}}),
     "search.space.angle_cutoff: must be in (0, 90)"),
    (with_(grid=DELETE, search={**SEARCH, "space": {"threshold_factor": {"low": 2, "high": 1}}}),
     "search.space.threshold_factor: low must be below high"),
    (with_(grid=DELETE, search={**SEARCH, "sampler": "grid"}), "search.space.threshold_factor: the grid sampler needs a list"),
    (with_(grid=DELETE, search={**SEARCH, "space": {}}), "search.space: give at least one setting"),
    (with_(save_models="best"), "save_models: must be final | all_cycles | none"),
    (with_(measure_latency="yes"), "measure_latency: must be true | false"),
    (with_(latency_batch=0), "latency_batch: must be at least 1"),
    (with_(sensitivity={"fractions": [0.5]}), "sensitivity: only in a spec of kind: sensitivity"),
    (with_(kind="scan"), "kind: must be trials | sensitivity"),
    (with_(kind="sensitivity"), "grid: not for a sensitivity sweep (kind: sensitivity)"),
    (with_(kind="sensitivity", grid=DELETE, sensitivity={"layers": ["conv1"]}),
     "sensitivity.layers[0]: str 'conv1' is not a prunable layer here (known: fc1)"),
    (with_(kind="sensitivity", grid=DELETE, sensitivity={"criteria": ["magnitude"], "layers": ["fc1"],
                                                         "vary": {"angle_cutoff": [10, 20]}}),
     "sensitivity.vary: repeats a scan"),
]


@pytest.mark.parametrize("spec, message", MALFORMED, ids=[m.split(":")[0] for _, m in MALFORMED])
def test_malformed_specs_exit_2_with_the_key_path_and_no_traceback(tmp_path, capsys, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = main(["sweep", str(path), "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0] and str(path) in err[0], err
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_broken_yaml_and_missing_files_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: [\n")
    assert main(["sweep", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the spec" in capsys.readouterr().err


def test_a_gpu_request_on_a_machine_without_gpu_is_refused_before_ray_starts(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(with_(resources={"cpu": 1, "gpu": 0.5})))
    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2
    assert "resources.gpu: 0.5 GPU per trial asked for, but this machine has no GPU" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_cluster_sweep_needs_shared_storage(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert main(["sweep", str(path), "--address", "10.0.0.1:6379"]) == 2
    assert "storage: a sweep on a cluster needs --storage" in capsys.readouterr().err


def test_set_reaches_top_level_keys_and_dotted_paths_with_the_same_one_line_errors(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(with_()))
    spec = load_spec(path, {"seeds": [7], "name": "again", "resources.cpu": 2, "lr": 0.01, "save_models": "none"})
    assert (spec.seeds, spec.name, spec.cpu, spec.fixed["lr"], spec.save_models) == ((7,), "again", 2, 0.01, "none")
    searched = tmp_path / "search.yaml"
    searched.write_text(yaml.safe_dump(with_(grid=DELETE, search=SEARCH)))
    assert load_spec(searched, {"search.num_samples": 9}).search.num_samples == 9
    for override, message in [("resources.gpu=2", "resources.gpu: a trial uses one GPU"),
                              ("search.num_samples=1", "search.num_samples"),
                              ("seeds=[1, 1]", "seeds: repeats a seed"),
                              ("colour.x=1", "--set colour.x: colour is not a spec key"),
                              ("name.first=x", "--set name.first: name is str 't'"),
                              ("treshold_factor=1", "fixed.treshold_factor: unknown trial setting")]:
        code = main(["sweep", str(searched if override.startswith("search") else path), "--dry-run",
                     "--set", override])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (override, err)


def test_a_dry_run_without_photos_says_how_a_sweep_is_given_them(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "cnn", "fixed": {"dataset": "catsdogs"}, "grid": [{"pruner": "none"}]}))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "fixed.data: catsdogs needs the folder" in err and "--set data=DIR" in err and "--data DIR" not in err


def test_set_overrides_fixed_settings(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent("""
        name: t
        fixed: {dataset: waveform, attributes: 40}
        grid: [{pruner: none}]
    """))
    spec = load_spec(path, {"attributes": 21, "epochs_finetune": 3})
    assert spec.grid[0].attributes == 21 and spec.grid[0].epochs_finetune == 3


SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_specs_are_valid(name, tmp_path):
    root = Path(__file__).resolve().parents[1]
    overrides = {"data": str(tmp_path)} if name in ("paper_cnn", "sensitivity_cnn") else None
    spec = load_spec(root / "sweeps" / f"{name}.yaml", overrides)
    assert spec.name == name and (spec.grid or spec.search or spec.scan.units)


NOT_FINITE_OR_TOO_BIG = [
    (with_(resources={"cpu": float("nan")}), "resources.cpu: must be a finite number"),
    (with_(resources={"cpu": float("inf")}), "resources.cpu: must be a finite number"),
    (with_(resources={"gpu": float("nan")}), "resources.gpu: must be a finite number"),
    (with_(seeds=[0, 10**20]), "seeds[1]: must be at most 4294967295"),
    (with_(seeds=[1e20]), "seeds[0]: must be an integer"),
    (with_(max_concurrent=10**20), "max_concurrent: must be at most"),
    (with_(max_failures=10**20), "max_failures: must be at most"),
    (with_(pack_size=10**20), "pack_size: must be auto or a whole number"),
    (with_(pack_size=float("nan")), "pack_size: must be auto or a whole number"),
    (with_(name="x" * 300), "name: at most 100 characters"),
    (with_(fixed__lr=float("nan")), "fixed.lr: must be a finite number"),
    (with_(grid__1__threshold_factor=[0.5, float("inf")]), "grid[1].threshold_factor[1]: must be a finite number"),
    (with_(fixed__val_frac=0, fixed__pretrain_stop="fixed"), "fixed.val_frac: must be above 0"),
    (with_(grid=DELETE, search={**SEARCH, "space": {"threshold_factor": {"low": 0.5, "high": float("inf")}}}),
     "search.space.threshold_factor.high: must be a finite number"),
    (with_(max_configurations=10), "grid: 12 trial configurations (sub-grids × seeds) exceed max_configurations 10"),
    (with_(max_configurations=0), "max_configurations: must be at least 1"),
    # A mistaken 10^9 grid is refused from the sizes of its axes, before any is expanded.
    (with_(grid__1__threshold_factor=[0.5 + i / 2000 for i in range(1000)], grid__1__n=list(range(100, 1100)),
           grid__1__hidden=list(range(1, 1001))),
     "grid: 2000000006 trial configurations (sub-grids × seeds) exceed max_configurations 1000000"),
]


@pytest.mark.parametrize("spec, message", NOT_FINITE_OR_TOO_BIG, ids=[m.split(":")[0] for _, m in NOT_FINITE_OR_TOO_BIG])
def test_non_finite_and_huge_values_exit_2_before_any_work(tmp_path, capsys, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = main(["sweep", str(path), "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0] and len(err[0]) < 300, err
    assert not (tmp_path / "runs").exists()


def test_a_grid_within_max_configurations_runs_and_duplicates_are_still_found():
    assert len(parse_spec(with_(max_configurations=12)).grid) == 12
    with pytest.raises(SpecError, match=r"grid\[1\]: repeats a configuration of grid\[1\]"):
        parse_spec(with_(grid__1__threshold_factor=[0.5, 1.0, 0.5]))


SEARCH_ERRORS = [
    # Selection on test data biases every reported number: the validation metrics are the objectives.
    (with_(grid=DELETE, search={**SEARCH, "objectives": {"acc_finetuned": "max"}}),
     "search.objectives.acc_finetuned: a test-set metric; choosing settings on test data biases every number "
     "reported for them: optimise val_acc_finetuned instead"),
    (with_(grid=DELETE, search={**SEARCH, "objectives": {"acc_pruned": "max"}}),
     "search.objectives.acc_pruned: a test-set metric"),
    (with_(grid=DELETE, search={**SEARCH, "objectives": {"weights_removed_frac": "max", "acc_pretrain": "max"}}),
     "search.objectives.acc_pretrain: a test-set metric"),
    # The sampler's options are its constructor's; a search that never leaves random sampling is refused.
    (with_(grid=DELETE, search={**SEARCH, "sampler_options": {"pop_size": 8}}),
     "search.sampler_options.pop_size: not an option of the nsga2 sampler (valid: population_size, mutation_prob, "
     "crossover_prob, swapping_prob)"),
    (with_(grid=DELETE, search={**SEARCH, "sampler": "tpe", "sampler_options": {"population_size": 8}}),
     "search.sampler_options.population_size: not an option of the tpe sampler (valid: consider_prior"),
    (with_(grid=DELETE, search={**SEARCH, "sampler_options": {"population_size": 1}}),
     "search.sampler_options: the nsga2 sampler refuses {'population_size': 1}"),
    (with_(grid=DELETE, search={**SEARCH, "sampler_options": {}, "num_samples": 24}),
     "search.num_samples: NSGA-II never leaves its first, random generation with 24 point(s) and population_size 50"),
    (with_(grid=DELETE, search={**SEARCH, "sampler_options": {"population_size": 4}}),
     "search.num_samples: NSGA-II never leaves its first, random generation with 4 point(s) and population_size 4"),
    (with_(grid=DELETE, search={**SEARCH, "sampler": "tpe", "sampler_options": {}, "num_samples": 10}),
     "search.num_samples: TPE never leaves its random startup trials with 10 point(s) and n_startup_trials 10"),
    (with_(grid=DELETE, search={**SEARCH, "sampler": "tpe", "sampler_options": {"n_startup_trials": 6}, "num_samples": 5}),
     "search.num_samples: TPE never leaves its random startup trials with 5 point(s) and n_startup_trials 6"),
    (with_(fixed__data_seed="each"), "fixed.data_seed: must be an integer >= 0 (one split for every seed) or per_seed"),
    (with_(fixed__data_seed=-1), "fixed.data_seed: must be an integer >= 0"),
    (with_(fixed__data_seed=True), "fixed.data_seed: must be an integer >= 0"),
]


@pytest.mark.parametrize("spec, message", SEARCH_ERRORS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(SEARCH_ERRORS)])
def test_test_set_objectives_idle_samplers_and_bad_data_seeds_exit_2_with_one_line(tmp_path, capsys, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = main(["sweep", str(path), "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()


def test_a_search_optimises_validation_accuracy_with_the_samplers_own_options():
    from prunerlib.sweep.search import make_sampler

    spec = parse_spec(with_(grid=DELETE, search={**SEARCH, "num_samples": 32, "sampler_options": {
        "population_size": 8, "crossover_prob": 0.8}, "objectives": {"val_acc_finetuned": "max", "val_acc_pruned": "max"}}))
    assert spec.search.objectives == (("val_acc_finetuned", "max"), ("val_acc_pruned", "max"))
    sampler = make_sampler(spec.search, seed=3)
    assert sampler._population_size == 8
    tpe = parse_spec(with_(grid=DELETE, search={**SEARCH, "sampler": "tpe", "num_samples": 8,
                                                 "sampler_options": {"n_startup_trials": 3, "multivariate": True}}))
    assert make_sampler(tpe.search, seed=0)._n_startup_trials == 3


def test_data_seed_per_seed_gives_every_seed_its_own_split_in_grids_and_searches():
    from prunerlib.sweep.trainable import SweepContext
    from prunerlib.sweep.search import POINTS

    grid = parse_spec(with_(fixed__data_seed="per_seed"))
    assert all(cfg.data_seed == cfg.seed for cfg in grid.grid) and {cfg.data_seed for cfg in grid.grid} == {0, 1}
    assert {cfg.data_seed for cfg in parse_spec(with_(fixed__data_seed=7)).grid} == {7}
    assert {cfg.data_seed for cfg in parse_spec(GOOD).grid} == {0}  # by default seeds vary training only
    search = parse_spec(with_(grid=DELETE, fixed__data_seed="per_seed", search=SEARCH))
    ctx = SweepContext(name="t", storage="/tmp", fixed=search.fixed, seeds=search.seeds, packs={}, objectives=(),
                       threads=1, gpu_share=1.0)
    members = ctx.members({POINTS: [{"threshold_factor": 1.0}]})
    assert [(m.seed, m.data_seed) for m in members] == [(0, 0), (1, 1)]


# A trial's device against its GPU share (issue 10, items 2, 3 and 8).
@pytest.mark.parametrize("spec, message", [
    (with_(fixed__device="cuda"), "fixed.device: cuda needs a GPU, but resources.gpu is 0"),
    (with_(grid__2__device=["cpu", "cuda:0"]), "grid[2].device[1]: cuda:0 needs a GPU, but resources.gpu is 0"),
    (with_(fixed__device="cuda:1", resources={"gpu": 1}),
     "fixed.device: cuda:1: a trial sees only the GPU Ray assigned it, as cuda:0"),
    (with_(fixed__device="gpu0"), "fixed.device: 'gpu0' is not a torch device"),
    (with_(resources={"gpu": 2}), "resources.gpu: a trial uses one GPU; give at most 1"),
    ({**{k: v for k, v in GOOD.items() if k != "grid"},
      "search": {**SEARCH, "space": {**SEARCH["space"], "device": ["cpu", "cuda"]}}},
     "search.space.device: the device is not searched"),
])
def test_a_device_the_trials_gpu_share_cannot_serve_is_refused_in_one_line(spec, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_cpu_beside_a_gpu_share_is_allowed_with_one_warning(caplog):
    spec = parse_spec(with_(fixed__device="cpu", grid__2__device=["cpu"], resources={"gpu": 0.5}))
    assert spec.gpu == 0.5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["fixed.device: cpu beside resources.gpu 0.5: each trial holds a GPU share it does not use"]
    caplog.clear()
    parse_spec(with_(fixed__device="auto", resources={"gpu": 0.5}))
    assert not caplog.records
