"""How long `prunerlib sweep SPEC --dry-run` takes as a grid grows: 10^3, 10^4, 10^5 configurations.

Each spec is a threshold grid of many factors × 10 seeds, written as YAML and timed through the
dry-run path: `load_spec` (parse, expand, validate every configuration, find duplicates) and
`plan_text` (packs and the listing), then the largest through the command itself. Planning should cost the same per configuration at every
size; the target is a 10^5-configuration dry run within 10 s on a 2-core machine.

    .venv/bin/python benchmarks/plan_size.py            # run time: benchmarks/README.md
    .venv/bin/python benchmarks/plan_size.py 1000 10000 # chosen sizes only
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from prunerlib.sweep.plan import plan_text
from prunerlib.sweep.spec import load_spec, parse_spec

SEEDS = 10


def spec_of(size: int) -> dict:
    factors = [round(0.25 + 2.0 * i / (size // SEEDS), 6) for i in range(size // SEEDS)]
    return {"name": f"plan{size}", "fixed": {"dataset": "waveform"}, "seeds": list(range(SEEDS)),
            "grid": [{"pruner": "threshold", "threshold_factor": factors}]}


def main(sizes: list[int]) -> None:
    # The first auto plan builds a model on torch's meta device, which imports torch's
    # decompositions once (about a second); shown apart so the rows compare sizes.
    start = time.perf_counter()
    plan_text(parse_spec(spec_of(10)), cpus=2)
    print(f"first plan (one-off torch warm-up): {time.perf_counter() - start:.2f} s")
    print(f"{'configurations':>14} {'load_spec s':>12} {'plan_text s':>12} {'total s':>8} {'per config µs':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"plan{size}.yaml"
            path.write_text(yaml.safe_dump(spec_of(size)))
            start = time.perf_counter()
            spec = load_spec(path)
            loaded = time.perf_counter()
            text = plan_text(spec, cpus=2)
            done = time.perf_counter()
            assert len(spec.grid) == size and text.count("factor=") == size
            print(f"{size:>14} {loaded - start:>12.2f} {done - loaded:>12.2f} {done - start:>8.2f} "
                  f"{(done - start) / size * 1e6:>14.1f}")
        # What a user waits for: a fresh process, imports (torch) and 10^5 lines printed included.
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prunerlib.cli", "sweep", str(path), "--dry-run"], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"prunerlib sweep --dry-run of {size} configurations, whole process: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10**3, 10**4, 10**5])
