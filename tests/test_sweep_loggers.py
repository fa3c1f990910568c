"""Tune sees configurations: a pack reports as its configurations finish, and a spec's
`callbacks: [tensorboard]` logs each configuration as its own TensorBoard run."""

import struct
from pathlib import Path

import pandas as pd
import pytest

from prunerlib.sweep.spec import SpecError, parse_spec
from tests.test_sweep_runner import TINY, sweep


def event_values(run: Path):
    """Every value in a run folder's event files, read with tensorboardX's protos (TFRecord
    framing: length, its CRC, the Event, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    for path in sorted(run.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                yield event.step, value


def test_each_configuration_is_a_tensorboard_run_and_tune_sees_the_pack_progress(tmp_path):
    from ray.tune import ExperimentAnalysis
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    spec = {"name": "tb", "fixed": {**TINY, "cycles": 2}, "seeds": [0], "pack_size": 3, "callbacks": ["tensorboard"],
            "grid": [{"pruner": "threshold", "threshold_factor": [0.5, 1.0]}, {"pruner": "none"}]}
    result = sweep(spec, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "runs" / "tb"
    assert f"tensorboard: {folder / 'tensorboard'}" in result.stdout
    df = pd.read_parquet(folder / "results.parquet")
    final = df[df["final"]].set_index("trial_id")
    assert sorted(p.name for p in (folder / "tensorboard").iterdir()) == sorted(final.index)
    for tid, row in final.iterrows():
        values = list(event_values(folder / "tensorboard" / tid))
        scalars = {(v.tag, step): v.simple_value for step, v in values if v.HasField("simple_value")}
        assert scalars[("acc_finetuned", row["cycle"])] == pytest.approx(row["acc_finetuned"], abs=1e-6)
        for _, cycle in df[df["trial_id"] == tid].iterrows():  # every cycle's row, as a step
            assert scalars[("cycle/acc_finetuned", cycle["cycle"])] == pytest.approx(cycle["acc_finetuned"], abs=1e-6)
        starts = [HParamsPluginData.FromString(v.metadata.plugin_data.content).session_start_info
                  for _, v in values if v.tag == "_hparams_/session_start_info"]
        assert len(starts) == 1 and starts[0].hparams["pruner"].string_value == row["pruner"]
    # One Tune trial, reporting as each fine-tuning cycle ends and once at the end; the three
    # configurations finish together in cycle 2, within a second, so they are told in one report
    # (REPORT_EVERY_S) that names each of them once.
    (progress,) = ExperimentAnalysis(str(folder / "tune")).trial_dataframes.values()
    assert progress["cycle"].tolist()[:2] == [1, 2] and (progress["configs_total"] == 3).all()
    assert progress["configs_done"].tolist()[:2] == [0, 0] and progress["configs_done"].iloc[-1] == 3
    assert len(progress) < 2 + 3 + 1, progress[["cycle", "configs_done"]]
    assert sorted(",".join(progress["new_trial_ids"].fillna("")).replace(",,", ",").strip(",").split(",")) \
        == sorted(final.index)


def test_a_tracker_whose_package_is_missing_is_one_line_naming_the_extra():
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    spec = {"name": "x", "fixed": TINY, "grid": [{"pruner": "none"}]}
    for callbacks, message in ((["mlflow"], "callbacks[0]: mlflow needs the mlflow package: pip install 'prunerlib[mlflow]'"),
                               (["tensorboard", "tensorboard"], "callbacks[1]: must be one of tensorboard, mlflow, wandb"),
                               ("tensorboard", "callbacks: must be a list")):
        with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_spec({**spec, "callbacks": callbacks})
    assert parse_spec({**spec, "callbacks": ["tensorboard"]}).callbacks == ("tensorboard",)
