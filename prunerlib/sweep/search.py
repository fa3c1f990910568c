"""An Optuna study driving Tune, a batch of points per Tune trial.

Ray's `OptunaSearch` ties one Tune trial to one Optuna trial. Small pruning trials are cheap
only when many run as one population, so here a Tune trial carries `batch` points asked of the
study at once (`study.ask`), and each point is told its own objective values (`study.tell`):
the study sees exactly the trials it would see one at a time, and `study.best_trials` is the
Pareto front of the points. The study lives in a journal file, so `optuna.load_study` and
`optuna-dashboard` open it during and after the sweep, and a resumed sweep continues it.

A seeded search asks the same points on every run with the same number of slots. What a
sampler asks depends on which results it has been told; with several Tune trials running, the
order results come back in is the machine's, so the searcher asks in rounds: one Tune trial per
slot, all asked before any result is told, and the next round only once every result of this
one is in. A slot that finishes early waits for its round (the packs of a round are alike, so
briefly). A resumed sweep offsets the sampler's seed and does not repeat an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
import warnings
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.search import Searcher

from prunerlib.config import TrialConfig
from prunerlib.sweep.checks import seeded
from prunerlib.sweep.search_spec import Range, Search, sampler_class

POINTS = "points"  # the Tune trial config key: the list of points (settings) it evaluates
NUMBERS = "optuna_trials"  # the Tune trial config key: each point's Optuna trial number
VALUES = "point_values"  # the reported key: one list of objective values per point


def distributions(search: Search) -> dict[str, optuna.distributions.BaseDistribution]:
    space: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, dim in search.space.items():
        if isinstance(dim, Range) and dim.integer:
            space[key] = optuna.distributions.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        elif isinstance(dim, Range):
            space[key] = optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
        else:
            space[key] = optuna.distributions.CategoricalDistribution(list(dim))
    return space


def make_sampler(search: Search, seed: int) -> optuna.samplers.BaseSampler:
    cls = sampler_class(search.sampler)
    if search.sampler == "grid":
        return cls({k: list(v) for k, v in search.space.items()}, seed=seed)
    return cls(**search.sampler_options, seed=seed)


def open_study(search: Search, name: str, journal: str) -> optuna.Study:
    directions = ["maximize" if mode == "max" else "minimize" for _, mode in search.objectives]
    study = optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(journal)),
                                directions=directions, load_if_exists=True)
    names = [metric for metric, _ in search.objectives]
    if study.metric_names != names:  # optuna-dashboard's axis names; written to the journal once
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    # A seeded sampler restarts its random stream with every process: offset the seed by the
    # trials the study already holds, so a resumed sweep continues instead of re-asking the
    # points it asked before, and a fresh one stays reproducible.
    study.sampler = make_sampler(search, search.seed + len(study.trials))
    return study


def point_trial_ids(fixed: dict[str, Any], seeds: tuple[int, ...], point: dict[str, Any]) -> list[str]:
    """The trial ids (config hashes) of a point's configurations, one per seed: what an Optuna
    trial's `trial_ids` user attribute holds, to find its rows in the results."""
    return [TrialConfig.from_dict({**seeded(fixed, s), **point}).config_hash() for s in seeds]


def planned_points(search: Search, name: str, journal: str) -> int:
    """How many distinct points the search runs: a sampler may ask a point twice (NSGA-II's
    child can equal its parent), and that point is one configuration, run once."""
    trials = open_study(search, name, journal).get_trials(deepcopy=False)
    asked = {tuple(sorted(t.params.items())) for t in trials}
    return len(asked) + max(0, search.num_samples - len(trials))


class BatchedOptunaSearch(Searcher):
    """Tune searcher: each suggestion is `batch` points; finishes after `search.num_samples`."""

    def __init__(self, search: Search, name: str, journal: str, batch: int, fixed: dict[str, Any],
                 seeds: tuple[int, ...]):
        metrics = [m for m, _ in search.objectives]
        super().__init__(metric=metrics, mode=[d for _, d in search.objectives])
        self.search, self.name, self.journal, self.batch = search, name, journal, batch
        self.fixed, self.seeds = fixed, seeds
        self.live: dict[str, list[int]] = {}  # Tune trial id -> Optuna trial numbers
        self.round: set[str] = set()  # Tune trials asked in this round and not yet told
        self.closed = False  # a result of this round is in: ask nothing until the rest are
        self.unreadable = False  # the journal was cut short under the running sweep (see _cut_short)
        self._study: optuna.Study | None = None

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = open_study(self.search, self.name, self.journal)
        return self._study

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.unreadable:
            return Searcher.FINISHED
        try:
            return self._suggest(trial_id)
        except json.JSONDecodeError as exc:
            return self._cut_short(exc)

    def _cut_short(self, exc: json.JSONDecodeError) -> str:
        """The journal stopped parsing mid-sweep (cut short under the running driver: a full disk,
        a copy): ask nothing more; the runs going on finish and keep their rows, and the runner
        tells the study again from the trial files when the sweep ends (_reconcile_study)."""
        if not self.unreadable:
            print(f"{self.journal}: the Optuna journal no longer parses ({exc.msg} at byte {exc.pos}): no new "
                  f"points are asked; the study is told again from the trial files when the sweep ends",
                  file=sys.stderr)
        self.unreadable = True
        return Searcher.FINISHED

    def _suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        # The journal, not this object, is the record of what was asked: after the driver died,
        # Tune's saved copy of the searcher may be older than the study. A point asked but held
        # by no Tune trial is handed out again before anything new is asked.
        trials = self.study.get_trials(deepcopy=False)
        held = {number for numbers in self.live.values() for number in numbers}
        orphans = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.number not in held]
        points = [(t.number, t.params) for t in orphans[: self.batch]]
        if not points and self.closed:
            return None  # Tune asks again on its next step
        space = distributions(self.search)
        for _ in range(min(self.batch - len(points), self.search.num_samples - len(trials))):
            trial = self.study.ask(space)
            trial.set_user_attr("trial_ids", point_trial_ids(self.fixed, self.seeds, trial.params))
            trial.set_user_attr("seeds", list(self.seeds))
            points.append((trial.number, trial.params))
        if not points:
            return Searcher.FINISHED
        self.live[trial_id] = [number for number, _ in points]
        self.round.add(trial_id)
        return {POINTS: [params for _, params in points], NUMBERS: self.live[trial_id]}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        numbers = self.live.pop(trial_id, [])
        self.round.discard(trial_id)
        self.closed = bool(self.round)
        values = (result or {}).get(VALUES) if not error else None
        for i, number in enumerate(numbers):
            point = values[i] if values is not None and i < len(values) else None
            # A resumed sweep may report a point the study already holds: keep the first answer.
            try:
                if point is None or any(v is None or math.isnan(v) for v in point):
                    self.study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                else:
                    self.study.tell(number, point, skip_if_finished=True)
            except json.JSONDecodeError as exc:
                self._cut_short(exc)
                return

    # Tune pickles the searcher into its experiment state and saves it with these; the study
    # itself is in the journal, so only the bookkeeping travels.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None, "round": set(), "closed": False}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"live": self.live}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.live = pickle.load(handle)["live"]
