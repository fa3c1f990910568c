"""Population engine benchmark (issue 5): how far is a pruning trial from its arithmetic?

Runs one Waveform grid (attributes × distinctiveness cutoffs, threshold factors, none and
random controls × seeds, default epochs) twice from one shared pretrained store, pretrained
beforehand so no arm pays for pretraining:

  sequential   run_trial, one configuration after another
  pack         run_pack over the whole grid (one population per attribute count)
  pack-torch   the same with the batched torch step instead of the compiled FFN kernel

and prints both wall times, the ms per model-epoch of the pack's fine-tuning next to the
FLOP-limited time (6 × training examples × parameters per model-epoch at the GFLOP/s a large
float32 matmul reaches in this run), and mean fine-tuned accuracy of each arm. Then a CNN
figure: training epochs/s of one CNN against a population of them.

An arm is a function (cfgs, dirs) -> (wall_s, rows); add one to ARMS to compare it too.

    .venv/bin/python benchmarks/population.py              # full grid (run times: benchmarks/README.md)
    .venv/bin/python benchmarks/population.py --seeds 1    # quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from prunerlib import ffn_kernel
from prunerlib.batched import Population, train_population
from prunerlib.config import TrialConfig
from prunerlib.datasets import Data, load_data
from prunerlib.masks import Masks
from prunerlib.models import build_model
from prunerlib.pipeline import Workdirs, run_trial
from prunerlib.pipeline import run_pack
from prunerlib.pretrained import load_or_pretrain
from prunerlib.training import train

Rows = list[dict[str, Any]]
Arm = Callable[[Sequence[TrialConfig], Workdirs], tuple[float, list[Rows]]]

CUTOFFS = (10.0, 15.0, 20.0, 25.0, 30.0)
FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5)


def waveform_grid(seeds: int) -> list[TrialConfig]:
    """12 configurations per attribute count and seed, at the default epoch counts."""
    cfgs = []
    for attributes in (21, 40):
        for seed in range(seeds):
            base = {"attributes": attributes, "seed": seed}
            cfgs += [TrialConfig.from_dict({**base, "pruner": "distinctiveness", "angle_cutoff": c}) for c in CUTOFFS]
            cfgs += [TrialConfig.from_dict({**base, "pruner": "threshold", "threshold_factor": f}) for f in FACTORS]
            cfgs += [TrialConfig.from_dict({**base, "pruner": "none"}),
                     TrialConfig.from_dict({**base, "pruner": "random", "match": "threshold"})]
    return cfgs


def sequential(cfgs: Sequence[TrialConfig], dirs: Workdirs) -> tuple[float, list[Rows]]:
    start = time.perf_counter()
    rows = [run_trial(cfg, dirs, progress=False) for cfg in cfgs]
    return time.perf_counter() - start, rows


def pack(cfgs: Sequence[TrialConfig], dirs: Workdirs) -> tuple[float, list[Rows]]:
    start = time.perf_counter()
    rows = run_pack(cfgs, dirs)
    return time.perf_counter() - start, rows


def pack_torch(cfgs: Sequence[TrialConfig], dirs: Workdirs) -> tuple[float, list[Rows]]:
    start = time.perf_counter()
    rows = run_pack(cfgs, dirs, kernel="torch")
    return time.perf_counter() - start, rows


ARMS: dict[str, Arm] = {"sequential": sequential, "pack": pack, "pack-torch": pack_torch}


def kernel_build_s() -> float | None:
    """Seconds to compile the FFN kernel from scratch (into a throw-away cache), None without one."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.environ.get("PRUNERLIB_CACHE")
        os.environ["PRUNERLIB_CACHE"] = tmp
        ffn_kernel.load.cache_clear()
        start = time.perf_counter()
        try:
            return time.perf_counter() - start if ffn_kernel.load() is not None else None
        finally:
            if saved is None:
                del os.environ["PRUNERLIB_CACHE"]
            else:
                os.environ["PRUNERLIB_CACHE"] = saved
            ffn_kernel.load.cache_clear()


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best-of GFLOP/s of a large float32 matmul on the current thread setting."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def pretrain_all(cfgs: Sequence[TrialConfig], dirs: Workdirs) -> None:
    for cfg in {c.pretrain_key(): c for c in cfgs}.values():
        load_or_pretrain(cfg, load_data(cfg), dirs.pretrained, torch.device("cpu"), progress=False)


def final_accuracy(rows: list[Rows]) -> float:
    return statistics.fmean(r[-1]["acc_finetuned"] for r in rows if r[-1]["status"] == "ok")


def cnn_epochs_per_s(members: int, image_dir: Path | None) -> tuple[float, float]:
    """(single CNN, population of `members`) training epochs per second, one epoch each."""
    cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": str(image_dir or "synthetic")})
    data = load_data(cfg) if image_dir else _synthetic_images(2000)
    single = build_model(cfg, 3, 2)
    start = time.perf_counter()
    train(single, data, cfg, epochs=1, seed=0, progress=False)
    single_rate = 1 / (time.perf_counter() - start)
    models = [build_model(cfg.replace(seed=k), 3, 2) for k in range(members)]
    pop = Population(models, [Masks(m) for m in models], [cfg] * members)
    start = time.perf_counter()
    train_population(pop, data, list(range(members)), epochs=1, batch_size=cfg.batch_size)
    return single_rate, members / (time.perf_counter() - start)


def _synthetic_images(n: int) -> Data:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 2, (n,), generator=g)
    cut = int(0.9 * n)
    return Data(x[:cut], y[:cut], x[cut:], y[cut:], x[cut:], y[cut:], classes=2, flip=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration (default 5: 120 trials)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every arm (default 1)")
    parser.add_argument("--cnn-members", type=int, default=16)
    parser.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/catsdogs",
                        help="Dogs vs. Cats folder for the CNN figure; synthetic images if it does not exist")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfgs = waveform_grid(args.seeds)
    build_s = kernel_build_s()
    print("FFN kernel: " + (f"compiled in {build_s:.1f} s (once per machine; cached)" if build_s is not None
                            else "unavailable, pack uses the torch step"), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = Workdirs(Path(tmp) / "pretrained")
        start = time.perf_counter()
        pretrain_all(cfgs, dirs)
        print(f"{len(cfgs)} Waveform trials; pretrained {len({c.pretrain_key() for c in cfgs})} models "
              f"beforehand in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        results = {}
        for name, arm in ARMS.items():
            results[name] = arm(cfgs, dirs)
            print(f"  {name}: {results[name][0]:.1f} s", file=sys.stderr)
    gflops = matmul_gflops()
    report(cfgs, results, gflops, args.threads)
    image_dir = args.images if args.images.is_dir() else None
    single_rate, pop_rate = cnn_epochs_per_s(args.cnn_members, image_dir)
    print(f"\nCNN ({'real photos' if image_dir else 'synthetic images'}, {args.threads} thread(s)): "
          f"single {single_rate:.2f} epochs/s, population of {args.cnn_members} {pop_rate:.2f} model-epochs/s "
          f"({pop_rate / single_rate:.1f}x)")


def report(cfgs: Sequence[TrialConfig], results: dict[str, tuple[float, list[Rows]]], gflops: float,
           threads: int) -> None:
    data = load_data(cfgs[0])
    n_train = len(data.train_y)
    model_epochs = {a: sum(c.epochs_finetune * len(r) for c, r in zip(cfgs, rows) if r[-1]["status"] == "ok")
                    for a, (_, rows) in results.items()}
    params = {att: sum(p.numel() for p in build_model(TrialConfig.from_dict({"attributes": att}), att, 3).parameters())
              for att in (21, 40)}
    # FLOPs of one model-epoch: 6 per parameter per training example (forward, and backward for
    # weights and inputs), the usual count; averaged over the grid's two input widths.
    flop_per_model_epoch = statistics.fmean(6 * n_train * params[c.attributes] for c in cfgs)
    flop_limit_ms = flop_per_model_epoch / (gflops * 1e9) * 1e3
    base = results["sequential"][0]
    print(f"\n{'arm':<12}{'wall s':>9}{'speed-up':>10}{'ms/model-epoch':>16}{'x FLOP limit':>14}{'mean acc':>10}")
    for arm, (wall, rows) in results.items():
        tune_s = sum(r["wall_finetune_s"] for trial in rows for r in trial if r["status"] == "ok")
        ms = tune_s / model_epochs[arm] * 1e3
        print(f"{arm:<12}{wall:>9.1f}{base / wall:>10.1f}{ms:>16.3f}{ms / flop_limit_ms:>14.1f}"
              f"{final_accuracy(rows):>10.4f}")
    print(f"\nlarge float32 matmul: {gflops:.0f} GFLOP/s on {threads} thread(s) -> FLOP-limited "
          f"{flop_limit_ms:.3f} ms per model-epoch ({flop_per_model_epoch / 1e6:.1f} MFLOP: 6 x {n_train} "
          f"examples x {statistics.fmean(params[c.attributes] for c in cfgs):.0f} parameters)")


if __name__ == "__main__":
    main()
