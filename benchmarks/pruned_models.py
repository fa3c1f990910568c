"""Saved pruned models, measured (issue 12): what pruning saves on disk and in time, per trial.

Runs, with the paper's default epochs and seed 0, the trials the issue names and one that
removes units, each saving its compacted model and timing it:

  cnn filters l1 50%       the paper CNN on real photos (../shared/data/catsdogs), half its filters
  waveform threshold x1.0  Waveform 40 attributes, unstructured weight pruning
  waveform dist. 15 deg    Waveform 40 attributes, distinctiveness at the paper's cutoff (removes a few units)
  waveform 50% units       Waveform 40 attributes, half the hidden units removed (examples/custom_pruner.py)

and prints, side by side: parameters of the dense and the saved network (and non-zero ones),
the saved file against the same network saved dense in the same format, theoretical
(FLOP) against measured speedup at the latency batch and at 1, and whether the accuracy
computed from the reloaded file equals the trial's `acc_finetuned`.

    .venv/bin/python benchmarks/pruned_models.py [--catsdogs DIR]    # about 2 min on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import prunerlib
from prunerlib import plugins
from prunerlib.config import TrialConfig
from prunerlib.datasets import load_data
from prunerlib.masks import Masks
from prunerlib.pipeline import Workdirs, run_trial
from prunerlib.saved import save_pruned
from prunerlib.training import accuracy

TRIALS = {
    "cnn filters l1 50%": {"dataset": "catsdogs", "pruner": "filters", "filter_criterion": "l1", "filters_frac": 0.5},
    "waveform threshold x1.0": {"dataset": "waveform", "attributes": 40, "pruner": "threshold",
                                "threshold_factor": 1.0},
    "waveform dist. 15 deg": {"dataset": "waveform", "attributes": 40, "pruner": "distinctiveness",
                              "angle_cutoff": 15.0},
    "waveform 50% units": {"dataset": "waveform", "attributes": 40, "pruner": "lowest_l2_units", "units_frac": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catsdogs", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/catsdogs")
    parser.add_argument("--latency-batch", type=int, default=256)
    args = parser.parse_args()
    plugins.load([Path(__file__).resolve().parents[1] / "examples" / "custom_pruner.py"])
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="pruned_models-"))
    dirs = Workdirs(work / "pretrained", models=work / "models", results=work, latency_batch=args.latency_batch)
    b = args.latency_batch
    print(f"| trial | params dense / saved (non-zero) | file dense / saved | theoretical | measured @{b} | "
          f"measured @1 | ms dense / pruned @{b} | ms dense / pruned @1 | acc_finetuned | reloaded |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, settings in TRIALS.items():
        if settings["dataset"] == "catsdogs":
            if not args.catsdogs.is_dir():
                print(f"| {name} | skipped: no photos at {args.catsdogs} (--catsdogs DIR) |")
                continue
            settings = {**settings, "data": str(args.catsdogs)}
        cfg = TrialConfig.from_dict({**settings, "seed": 0})
        final = run_trial(cfg, dirs, trial_id=name.replace(" ", "_"), progress=False)[-1]
        path = work / final["model_path"]
        loaded = prunerlib.load_pruned(path)
        data = load_data(cfg)
        reloaded = accuracy(loaded, data.test_x, data.test_y)
        dense_file = work / "dense.pt"  # the unpruned network in the same format: like for like
        dense_model = prunerlib.saved.build({**loaded.prunerlib["architecture"], **_dense_widths(cfg)})
        save_pruned(dense_file, dense_model, Masks(dense_model), cfg, input_shape=tuple(loaded.prunerlib["input_shape"]),
                    class_names=data.class_names, preprocessing=data.preprocessing, about={})
        saved_params = sum(p.numel() for p in loaded.parameters())
        print(f"| {name} | {final['params_total']:,} / {saved_params:,} ({final['params_nonzero']:,}) | "
              f"{_kb(dense_file)} / {_kb(path)} | {final['theoretical_speedup']:.2f}× | "
              f"{final['measured_speedup']:.2f}× | {final['measured_speedup_b1']:.2f}× | "
              f"{final['latency_ms_dense']:.3f} / {final['latency_ms_pruned']:.3f} | "
              f"{final['latency_ms_dense_b1']:.4f} / {final['latency_ms_pruned_b1']:.4f} | "
              f"{final['acc_finetuned']:.4f} | {reloaded:.4f} ({'equal' if reloaded == final['acc_finetuned'] else 'DIFFERS'}) |")
    print(f"\ndevice cpu, {final['latency_threads']} thread; models in {work / 'models'}")


def _dense_widths(cfg: TrialConfig) -> dict:
    if cfg.model == "ffn":
        return {"hidden": cfg.hidden}
    return {"hidden": cfg.hidden, "channels": list(cfg.conv_channels)}


def _kb(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.0f} kB"


if __name__ == "__main__":
    main()
