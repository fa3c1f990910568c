"""The sweep service's speed-up, end to end: the paper's Waveform grid (sweeps/paper_waveform.yaml,
210 trials at full epoch counts) on Ray Tune, run two ways in one run of this script:

  (a) tune-default   one configuration per Tune trial, Tune's defaults (no actor reuse)
  (b) population     packs through the population engine, as `prunerlib sweep` runs them

Both arms start from the same pretrained models (pretrained once beforehand and copied into
each arm's sweep folder), so the ratio measures the engine, not the cache. Prints both wall
times and their ratio, (b)'s time per model-epoch next to the FLOP-limited time from a large
matmul measured in this run, the mean fine-tuned accuracy of each arm, and the CNN figure of
benchmarks/population.py (epochs/s, population vs single).

    .venv/bin/python benchmarks/tune_vs_population.py          # run time and figures: benchmarks/README.md
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
import torch
from ray import tune

from population import cnn_epochs_per_s, matmul_gflops  # benchmarks/population.py, beside this file
from prunerlib.datasets import load_data
from prunerlib.models import build_model
from prunerlib.pretrained import load_or_pretrain
from prunerlib.sweep.plan import Pack, grid_packs
from prunerlib.sweep.trainable import SweepContext, pack_trial
from prunerlib.sweep.spec import SweepSpec, load_spec
from prunerlib.sweep.store import SweepFolder

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 2  # one Tune trial per core


def run_arm(spec: SweepSpec, storage: Path, packs: list[Pack], store: Path, defaults: bool) -> tuple[float, pd.DataFrame]:
    folder = SweepFolder(storage, spec.name)
    folder.begin(spec, resume=False)
    shutil.copytree(store, folder.pretrained)
    ctx = SweepContext(name=spec.name, storage=str(storage), fixed=spec.fixed, seeds=spec.seeds,
                       packs={p.label: tuple(c.to_dict() for c in p.members) for p in packs}, objectives=(), threads=1,
                       gpu_share=1.0)
    trainable = tune.with_resources(tune.with_parameters(pack_trial, ctx=ctx), {"cpu": 1})
    tune_config = tune.TuneConfig() if defaults else tune.TuneConfig(reuse_actors=True)
    tuner = tune.Tuner(trainable, param_space={"pack": tune.grid_search([p.label for p in packs])},
                       tune_config=tune_config, run_config=tune.RunConfig(storage_path=str(folder.root), verbose=0))
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start, folder.consolidate()


def main() -> None:
    spec = load_spec(ROOT / "sweeps" / "paper_waveform.yaml")
    cfgs = spec.grid
    ray.init(address="local", num_cpus=SLOTS, include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "pretrained"
        start = time.perf_counter()
        for cfg in {c.pretrain_key(): c for c in cfgs}.values():
            load_or_pretrain(cfg, load_data(cfg), store, torch.device("cpu"), progress=False)
        print(f"{len(cfgs)} trials; {len({c.pretrain_key() for c in cfgs})} models pretrained beforehand "
              f"in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        singles = [Pack(f"p{i:03d}", (cfg,)) for i, cfg in enumerate(cfgs)]
        wall_a, rows_a = run_arm(spec, Path(tmp) / "a", singles, store, defaults=True)
        print(f"  (a) tune-default: {wall_a:.1f} s", file=sys.stderr)
        packs = grid_packs(spec, SLOTS)
        wall_b, rows_b = run_arm(spec, Path(tmp) / "b", packs, store, defaults=False)
        print(f"  (b) population ({len(packs)} packs): {wall_b:.1f} s", file=sys.stderr)
    ray.shutdown()

    torch.set_num_threads(1)  # each Tune trial computes on one thread
    gflops = matmul_gflops()
    n_train = len(load_data(cfgs[0]).train_y)
    params = {c.attributes: sum(p.numel() for p in build_model(c, c.attributes, 3).parameters()) for c in cfgs}
    # 6 FLOPs per parameter per training example (forward; backward for weights and inputs).
    flop_ms = statistics.fmean(6 * n_train * params[c.attributes] for c in cfgs) / (gflops * 1e9) * 1e3
    model_epochs = sum(c.epochs_finetune * c.cycles for c in cfgs)
    ok_b = rows_b[rows_b["status"] == "ok"]
    engine_ms = ok_b["wall_finetune_s"].sum() / model_epochs * 1e3
    end_to_end_ms = wall_b * SLOTS / model_epochs * 1e3

    print(f"\nWaveform grid: {len(cfgs)} trials, {model_epochs} fine-tuning model-epochs, {SLOTS} Tune slots")
    print(f"{'arm':<34}{'wall s':>9}{'mean acc':>10}{'failed':>8}")
    for name, wall, rows in (("(a) one config per Tune trial", wall_a, rows_a), ("(b) population packs", wall_b, rows_b)):
        ok = rows[rows["final"] & (rows["status"] == "ok")]
        print(f"{name:<34}{wall:>9.1f}{ok['acc_finetuned'].mean():>10.4f}{len(rows) - len(ok):>8}")
    print(f"speed-up (a)/(b): {wall_a / wall_b:.1f}x")
    print(f"\n(b) per model-epoch: {engine_ms:.3f} ms fine-tuning in the engine, {end_to_end_ms:.3f} core-ms end to end "
          f"(wall x slots: pruning, evaluation, FLOP counting, Tune included)")
    print(f"FLOP limit: large float32 matmul {gflops:.0f} GFLOP/s on one thread -> {flop_ms:.3f} ms per model-epoch; "
          f"engine {engine_ms / flop_ms:.1f}x, end to end {end_to_end_ms / flop_ms:.1f}x")
    images = ROOT.parent / "shared" / "data" / "catsdogs"
    single, population = cnn_epochs_per_s(16, images if images.is_dir() else None)
    print(f"\nCNN ({'real photos' if images.is_dir() else 'synthetic images'}, one thread): single {single:.2f} "
          f"epochs/s, population of 16 {population:.2f} model-epochs/s ({population / single:.1f}x)")


if __name__ == "__main__":
    main()
