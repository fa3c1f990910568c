"""Each configuration of a sweep as its own run in the experiment trackers its spec names
(`callbacks: [tensorboard, mlflow, wandb]`), logged by the driver as configurations finish.

Tune's own loggers see Tune trials, which are packs of mixed configurations; these see one run
per configuration: its settings as hyperparameters, every cycle's metrics (`cycle/<metric>`,
step = cycle) and its final row's metrics under their column names. They are views: the
sweep's Parquet files stay the record (a run lost with a killed driver is not logged again).

TensorBoard runs are `<sweep>/tensorboard/<trial_id>/` (tensorboardX comes with ray[tune]);
MLflow runs go to the tracking URI MLflow is configured with (MLFLOW_TRACKING_URI, else
./mlruns), in the experiment named after the sweep; W&B runs to the project named after it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.tune import Callback

from prunerlib.config import column_settings
from prunerlib.records import schema
from prunerlib.sweep.store import SweepFolder
from prunerlib.sweep.trainable import NEW_IDS

Rows = list[dict[str, Any]]


class RunLoggers(Callback):
    """A Tune callback on the driver: for each pack result, the configurations it names as new
    are read from the sweep folder and logged, one run each, to every logger enabled."""

    def __init__(self, names: tuple[str, ...], storage: str, sweep: str):
        self.names, self.storage, self.sweep = names, storage, sweep
        self.broken: set[str] = set()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        folder = SweepFolder(self.storage, self.sweep)
        for tid in filter(None, str(result.get(NEW_IDS, "")).split(",")):
            rows = folder.rows(tid)
            if rows:
                self.log(tid, rows, folder.root)

    def log(self, tid: str, rows: Rows, root: Path) -> None:
        settings, cycles, final = run_contents(rows)
        for name in self.names:
            if name in self.broken:
                continue
            try:
                _WRITERS[name](self.sweep, tid, settings, cycles, final, root)
            except Exception as exc:  # noqa: BLE001  a tracker that is down must not end the sweep
                self.broken.add(name)
                print(f"callbacks: {name} failed ({type(exc).__name__}: {str(exc)[:200]}); no more runs are logged "
                      f"to it in this sweep (the Parquet files have every row)", file=sys.stderr)


def run_contents(rows: Rows) -> tuple[dict[str, Any], list[tuple[int, dict[str, float]]], dict[str, float]]:
    """A configuration's run: its settings (plus its status and ids), each cycle's metrics, and
    the metrics of its final row."""
    last = rows[-1]
    settings = {k: v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
                for k, v in json.loads(last["config_json"]).items()}
    settings |= {"status": last["status"], "trial_id": last["trial_id"]}
    names = _metric_names()
    metrics = lambda row: {m: float(row[m]) for m in names  # noqa: E731
                           if row.get(m) is not None and not math.isnan(row[m])}
    return settings, [(int(r["cycle"]), metrics(r)) for r in rows if r["status"] == "ok"], metrics(last)


def _metric_names() -> list[str]:
    """The float columns that are outcomes, not settings: accuracies, removed fractions,
    speedups, latencies, wall times."""
    settings = set(column_settings())
    return [f.name for f in schema() if pa.types.is_floating(f.type) and f.name not in settings]


def _tensorboard(sweep: str, tid: str, settings: dict[str, Any], cycles: list, final: dict[str, float],
                 root: Path) -> None:
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams

    # The hparams summaries go into the run's own folder (add_hparams would open a second run
    # beside it), so TensorBoard's HParams table has one row per configuration.
    with SummaryWriter(logdir=str(root / "tensorboard" / tid)) as writer:
        for cycle, metrics in cycles:
            for metric, value in metrics.items():
                writer.add_scalar(f"cycle/{metric}", value, cycle)
        for summary in hparams({k: v for k, v in settings.items() if v is not None}, final):
            writer._get_file_writer().add_summary(summary)
        step = cycles[-1][0] if cycles else 0
        for metric, value in final.items():
            writer.add_scalar(metric, value, step)


def _mlflow(sweep: str, tid: str, settings: dict[str, Any], cycles: list, final: dict[str, float],
            root: Path) -> None:  # noqa: ARG001
    import mlflow

    mlflow.set_experiment(sweep)
    with mlflow.start_run(run_name=tid):
        mlflow.log_params({k: v for k, v in settings.items() if v is not None})
        for cycle, metrics in cycles:
            mlflow.log_metrics({f"cycle/{m}": v for m, v in metrics.items()}, step=cycle)
        mlflow.log_metrics(final)


def _wandb(sweep: str, tid: str, settings: dict[str, Any], cycles: list, final: dict[str, float],
           root: Path) -> None:  # noqa: ARG001
    import wandb

    run = wandb.init(project=sweep, name=tid, config=settings)
    try:
        for cycle, metrics in cycles:
            run.log({f"cycle/{m}": v for m, v in metrics.items()}, step=cycle)
        run.summary.update(final)
    finally:
        run.finish()


_WRITERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}
