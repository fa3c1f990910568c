"""Population size against throughput and memory on a GPU: how big a pack a GPU wants.

    .venv/bin/python benchmarks/gpu.py                 # FFN and CNN, populations 1, 2, 4, ...
    .venv/bin/python benchmarks/gpu.py --model cnn --epochs 3 --exact

For each model, populations of 1, 2, 4, ... members (doubling until `population.members_that_fit`
says the GPU is full, or it runs out of memory) fine-tune on data of the real sizes (Waveform:
3600 training examples of 40 attributes; Dogs vs. Cats: 1800 images 3×32×32, flipped at random)
and the table shows model-epochs per second, the peak GPU memory the population took (from
torch.cuda.max_memory_allocated, data excluded) and `population.member_bytes`' estimate for it.
Without a CUDA GPU it says so in one line and exits 0: CPU populations have their own
benchmark (benchmarks/population.py).
"""

from __future__ import annotations

import argparse
import time

import torch

from prunerlib.batched import Population, train_population
from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.masks import Masks
from prunerlib.models import build_model
from prunerlib.population import member_bytes, members_that_fit
from prunerlib.training import set_numerics


def _setup(model: str, device: torch.device) -> tuple[TrialConfig, Data]:
    g = torch.Generator().manual_seed(0)
    if model == "cnn":
        cfg = TrialConfig.from_dict({"dataset": "catsdogs", "data": "synthetic", "device": str(device)})
        x, y = torch.randn(1800, 3, 32, 32, generator=g), torch.randint(0, 2, (1800,), generator=g)
        data = Data(x, y, x[:200], y[:200], x[:400], y[:400], classes=2, flip=True)
    else:
        cfg = TrialConfig.from_dict({"device": str(device)})
        x, y = torch.randn(3600, 40, generator=g), torch.randint(0, 3, (3600,), generator=g)
        data = Data(x, y, x[:400], y[:400], x[:1000], y[:1000], classes=3, flip=False)
    return cfg, data.to(device)


def _run(cfg: TrialConfig, data: Data, k: int, epochs: int, device: torch.device) -> tuple[float, int]:
    """(model-epochs per second, peak bytes above the data) of a k-member population."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(build_model(cfg, data.in_features, data.classes).to(device))
    masks = [Masks(m).to(device) for m in models]
    pop = Population(models, masks, [cfg.replace(seed=s) for s in range(k)])
    train_population(pop, data, list(range(k)), epochs=1, batch_size=cfg.batch_size)  # warm-up: kernels, allocator
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    train_population(pop, data, list(range(k)), epochs=epochs, batch_size=cfg.batch_size)
    torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    return k * epochs / wall, torch.cuda.max_memory_allocated(device) - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["ffn", "cnn", "both"], default="both")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per population size")
    parser.add_argument("--max-members", type=int, default=None, help="stop doubling here")
    parser.add_argument("--exact", action="store_true", help="IEEE fp32 and deterministic kernels (exact: true)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU here (torch.cuda.is_available() is False); nothing to measure")
        return
    device = torch.device("cuda", 0)
    set_numerics(device, args.exact)
    props = torch.cuda.get_device_properties(device)
    print(f"{props.name}, {props.total_memory / 2**30:.1f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"exact={args.exact}")
    for model in (["ffn", "cnn"] if args.model == "both" else [args.model]):
        cfg, data = _setup(model, device)
        fits = members_that_fit(cfg, device)
        limit = min(fits, args.max_members or fits)
        print(f"\n{model}: member_bytes {member_bytes(cfg) / 2**20:.2f} MiB, members_that_fit says {fits} fit")
        print(f"{'members':>8} {'model-epochs/s':>15} {'peak MiB':>10} {'estimate MiB':>13} {'MiB/member':>11}")
        k = 1
        while k <= limit:
            try:
                rate, peak = _run(cfg, data, k, args.epochs, device)
            except torch.OutOfMemoryError:
                print(f"{k:>8} out of memory")
                break
            print(f"{k:>8} {rate:>15.1f} {peak / 2**20:>10.1f} {k * member_bytes(cfg) / 2**20:>13.1f} "
                  f"{peak / k / 2**20:>11.2f}")
            k *= 2


if __name__ == "__main__":
    main()
