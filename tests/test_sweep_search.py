"""A seeded search on real Ray Tune and a real Optuna study: the same points on every run."""

import optuna

from tests.test_sweep_runner import TINY, load_study, sweep


def asked_points(spec: dict, tmp_path, run: str) -> list[tuple[float, str]]:
    (tmp_path / run).mkdir()
    result = sweep(spec, tmp_path / run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load_study(tmp_path / run / "runs" / spec["name"])
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return [(round(t.params["threshold_factor"], 12), t.params["threshold_stat"]) for t in study.trials]


def search_spec(**extra) -> dict:
    return {"name": "seeded", "fixed": {**TINY, "pruner": "threshold"}, "seeds": [0], "pack_size": 2,
            "search": {"sampler": "tpe", "num_samples": 16, "seed": 5, "sampler_options": {"n_startup_trials": 4},
                       "objectives": {"val_acc_finetuned": "max", "weights_removed_frac": "max"},
                       "space": {"threshold_factor": {"low": 0.25, "high": 3.0}, "threshold_stat": ["mean_abs", "std"]}},
            **extra}


def test_a_seeded_search_with_parallel_trials_asks_the_same_points_on_every_run(tmp_path):
    # Two Tune trials at once, 2 points each: without rounds, which results the sampler has seen
    # when it asks depends on which trial finished first.
    spec = search_spec(max_concurrent=2)
    first, second = (asked_points(spec, tmp_path, run) for run in ("a", "b"))
    assert len(first) == 16 and len(set(first)) == 16
    assert first == second


def test_a_seeded_sequential_search_asks_the_same_points_on_every_run(tmp_path):
    spec = search_spec(max_concurrent=1)
    assert asked_points(spec, tmp_path, "a") == asked_points(spec, tmp_path, "b")


def test_an_evolving_nsga2_search_that_asks_a_point_twice_runs_it_once_and_is_complete(tmp_path):
    import pandas as pd

    spec = search_spec(max_concurrent=1)
    spec["search"] = {**spec["search"], "sampler": "nsga2", "sampler_options": {"population_size": 4}}
    points = asked_points(spec, tmp_path, "a")  # asserts exit code 0: nothing is missing
    assert len(points) == 16 and len(set(points)) < 16  # children equal to a parent, at this seed
    df = pd.read_parquet(tmp_path / "a" / "runs" / "seeded" / "results.parquet")
    assert len(df) == len(set(points)) and df["trial_id"].is_unique


def test_a_studys_trials_name_their_objectives_and_their_configurations_rows(tmp_path):
    import pandas as pd

    from prunerlib.records import git_state
    from tests.test_sweep_runner import TINY

    spec = {"name": "named", "fixed": {**TINY, "pruner": "threshold"}, "seeds": [0, 1], "pack_size": 2,
            "search": {"sampler": "random", "num_samples": 3, "seed": 0,
                       "objectives": {"val_acc_finetuned": "max", "weights_removed_frac": "max"},
                       "space": {"threshold_factor": {"low": 0.25, "high": 3.0}}}}
    result = sweep(spec, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load_study(tmp_path / "runs" / "named")
    assert study.metric_names == ["val_acc_finetuned", "weights_removed_frac"]  # optuna-dashboard's axes
    df = pd.read_parquet(tmp_path / "runs" / "named" / "results.parquet")
    assert len(study.trials) == 3 and len(df) == 6
    for trial in study.trials:  # one configuration per seed, found in the results by id
        rows = df.set_index("trial_id").loc[trial.user_attrs["trial_ids"]]
        assert rows["seed"].tolist() == [0, 1] and (rows["optuna_trial"] == trial.number).all()
        assert (rows["threshold_factor"] == trial.params["threshold_factor"]).all()
    assert df["git_commit"].tolist() == [git_state()[0]] * 6  # the workers' checkout is this one
