"""`prunerlib sweep sweeps/paper_waveform.yaml` end to end against plain PyTorch loops doing the
same model-epochs, for 5 seeds and for 20 (`--set seeds=[0,...,19]`), side by side in one run:

  (a) plain loops   the model-epochs the sweep ran (pretraining epochs run per pretraining key,
                    fine-tuning epochs per trial and cycle, read from its results.parquet) as
                    one-thread Adam loops over mini-batches of 32 on the FFN, one process per
                    core, no Ray
  (b) sweep         `prunerlib sweep` as a subprocess on fresh storage, process start to exit

Prints the ratio (a)/(b) per seed count, Table 1's threshold ×1.0 cells (the paper's check:
≥ 85.0 % accuracy at ≥ 45 % of weights removed), a breakdown of the sweep's wall time from
the driver's PRUNERLIB_TIMINGS=1 marks, the rows' started_at and wall_* columns and the trial
files' times, the CPU seconds the sweep's processes used (what the cores bound it to), and
`--alone N` configurations run alone against the sweep's rows. `--sample F`
runs only the fraction F of (a)'s epochs and scales its time (a full 20-seed (a) is ~11 min
on 2 cores); `--before DIR` runs an earlier commit's sweep too (`git worktree add DIR REV`);
`--keep DIR` leaves the sweep folders there; `--repeat N` runs each checkout's sweep N times
(taking turns) and reports the median run.

    .venv/bin/python benchmarks/end_to_end.py [--seeds 5 20] [--sample 0.25] [--before DIR]  # figures: README.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CORES = 2


def plain_loops(epochs: int, attributes: int) -> tuple[int, float]:
    """`epochs` epochs of the paper's FFN on Waveform: a plain one-thread Adam loop, batches of 32."""
    import torch
    import torch.nn.functional as F

    from prunerlib.config import TrialConfig
    from prunerlib.datasets import load_data
    from prunerlib.models import build_model

    torch.set_num_threads(1)
    cfg = TrialConfig.from_dict({"dataset": "waveform", "attributes": attributes})
    data = load_data(cfg)
    model = build_model(cfg, data.in_features, data.classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(data.train_y)).split(32):
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return os.getpid(), time.perf_counter() - start


def model_epochs(rows: pd.DataFrame) -> dict[int, int]:
    """Model-epochs the sweep trained, by attribute count: each pretraining key's epochs once,
    each trial's fine-tuning epochs once per cycle row."""
    pre = rows.drop_duplicates("pretrain_key").groupby("attributes")["pretrain_epochs_run"].sum()
    fine = rows[rows["status"] == "ok"].groupby("attributes")["epochs_finetune"].sum()
    return {int(a): int(pre.get(a, 0) + fine.get(a, 0)) for a in sorted(set(pre.index) | set(fine.index))}


def run_plain(work: dict[int, int], sample: float) -> float:
    """Wall seconds of `work` as plain loops on CORES processes. With `sample` < 1, the loops'
    part of it is scaled up, the processes' start-up is not."""
    jobs = [(max(1, round(n * sample)), a) for a, n in work.items()]
    # Split each attribute count's epochs over the cores: one process per core, no idle core.
    chunks = [(e // CORES + (i < e % CORES), a) for e, a in jobs for i in range(CORES)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(CORES) as pool:
        timed = pool.starmap(plain_loops, [c for c in chunks if c[0]], chunksize=1)
    wall = time.perf_counter() - start
    per_process: dict[int, float] = {}
    for pid, seconds in timed:
        per_process[pid] = per_process.get(pid, 0.0) + seconds
    return wall + (1 / sample - 1) * max(per_process.values())


def run_sweep(seeds: int, storage: Path, tree: Path | None = None
              ) -> tuple[float, dict[str, float], pd.DataFrame, dict[str, float]]:
    """Wall seconds of `prunerlib sweep` from process start to exit, its timing marks, its rows,
    the CPU seconds its processes used (`cpu_seconds`).
    `tree`: another checkout's prunerlib instead of this one's (`python -m prunerlib` with it
    first on the path), to measure before and after side by side."""
    command = [sys.executable, "-m", "prunerlib", "sweep", str(ROOT / "sweeps" / "paper_waveform.yaml"),
               "--storage", str(storage), "--set", f"seeds={list(range(seeds))}".replace(" ", "")]
    env = {**os.environ, "PRUNERLIB_TIMINGS": "1", **({"PYTHONPATH": str(tree)} if tree else {})}
    with tempfile.TemporaryFile("w+") as err:
        before = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()} if os.path.isdir("/proc") else set()
        start = time.time()
        sweep = subprocess.Popen(command, env=env, cwd=tree or ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        cpu = cpu_seconds(sweep, before, timeout=3600) if before else {}
        sweep.wait(timeout=3600)  # (waited for already where /proc is)
        wall = time.time() - start
        err.seek(0)
        stderr = err.read()
    if sweep.returncode:
        sys.exit(f"sweep failed ({sweep.returncode}):\n{stderr[-3000:]}")
    marks = {"start": start, "exit": start + wall}
    for line in stderr.splitlines():
        if line.startswith("prunerlib-timing "):
            _, phase, at = line.split()
            marks[phase] = float(at)
    return wall, marks, pd.read_parquet(storage / "paper_waveform" / "results.parquet"), cpu


def cpu_seconds(sweep: subprocess.Popen, before: set[int], timeout: float) -> dict[str, float]:
    """CPU seconds (user + system) the sweep's processes used until it exited (or `timeout`
    seconds passed), by kind: the driver, Ray's own processes, the trial workers. `before`: the
    pids that ran before it started, never its. Each new process is read from /proc every 50 ms
    and keeps its last reading once gone (Linux)."""
    tick, kinds, last, others = os.sysconf("SC_CLK_TCK"), {}, {}, set(before)
    deadline = time.monotonic() + timeout
    while sweep.poll() is None and time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in others:
                continue
            pid = int(entry)
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                if pid not in kinds:
                    parent = int(fields[1])
                    if pid != sweep.pid and parent not in kinds:
                        if parent in others:  # not the sweep's (a parent not read yet: next time)
                            others.add(pid)
                        continue
                    command = Path(f"/proc/{pid}/cmdline").read_text()
                    kinds[pid] = ("driver" if pid == sweep.pid else
                                  "trial workers" if "default_worker.py" in command else "Ray's own processes")
            except OSError:  # gone meanwhile
                continue
            last[pid] = (int(fields[11]) + int(fields[12])) / tick
        time.sleep(0.05)
    found = {"driver": 0.0, "Ray's own processes": 0.0, "trial workers": 0.0}
    for pid, cpu in last.items():
        found[kinds[pid]] += cpu
    return found


# The driver's marks (PRUNERLIB_TIMINGS=1), and the phase that ends at each.
_PHASES = {"driver_ready": "imports (process start to run_sweep)", "ray_ready": "Ray start-up (ray.init, cluster check)",
           "tuner_built": "planning, Tuner", "first_pack": "Tune workers starting (to the first pack's start)",
           "last_file": "packs (first pack's start to the last trial file)",
           "fit_done": "Tune's tail (last trial file to fit's return)", "consolidated": "consolidation",
           "summarised": "summary, verdict", "ray_shut_down": "ray.shutdown", "exit": "process exit"}


def breakdown(marks: dict[str, float], storage: Path, rows: pd.DataFrame) -> list[tuple[str, float]]:
    """The sweep's wall time phase by phase, in the order its marks came (a phase beside
    another counts from the end of that one); the packs' part split by the rows' wall_* columns
    (core-seconds divided over the slots: what they cost the wall if the slots stay busy). The
    packs run from the first row's started_at (run_pack's start) to the last trial file written."""
    marks = {**marks, "first_pack": rows["started_at"].min().timestamp(),
             "last_file": max(f.stat().st_mtime for f in (storage / "paper_waveform" / "trials").glob("*.*")
                              if f.suffix in (".arrow", ".parquet"))}  # .parquet: a --before checkout's
    pretrain = rows[~rows["pretrain_reused"].astype(bool)].drop_duplicates("pretrain_key")["wall_pretrain_s"].sum()
    finetune = rows["wall_finetune_s"].sum()
    phases, before = [], marks["start"]
    for mark, at in sorted(((m, t) for m, t in marks.items() if m in _PHASES), key=lambda item: item[1]):
        phases.append((_PHASES[mark], at - before))
        before = at
        if mark == "last_file":
            packs = phases[-1][1]
            phases += [("  of which pretraining in the packs (per slot)", pretrain / CORES),
                       ("  of which fine-tuning (per slot)", finetune / CORES),
                       ("  of which pruning, evaluation, latency, saving, rows, reports",
                        packs - (pretrain + finetune) / CORES)]
    return phases


# What a single run must give as the sweep gave it: every cycle's row, compared column by
# column. Accuracies may differ by one example at most (test_population: a batched fine-tuning
# step sums in another order than the single model's); everything else exactly.
_SAME = ("cycle", "final", "status", "pretrain_epochs_run", "acc_pretrain", "val_acc_pretrain", "units_removed_frac",
         "weights_removed_frac", "params_nonzero", "flops_pruned")
_CLOSE = ("acc_pruned", "acc_finetuned", "val_acc_finetuned")


def single_runs(rows: pd.DataFrame, count: int) -> str:
    """`count` of the sweep's configurations, drawn at random, run alone (`prunerlib run`'s
    run_trial, from a fresh pretrained store): how far their rows are from the sweep's."""
    import numpy as np

    from prunerlib.config import TrialConfig
    from prunerlib.pipeline import Workdirs, run_trial

    ids = np.random.default_rng(0).choice(sorted(rows["trial_id"].unique()), count, replace=False)
    worst, unequal = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        for tid in ids:
            swept = rows[rows["trial_id"] == tid].sort_values("cycle").reset_index(drop=True)
            cfg = TrialConfig.from_dict(json.loads(swept["config_json"].iloc[0]))
            alone = pd.DataFrame(run_trial(cfg, Workdirs(Path(tmp)), trial_id=tid, progress=False))
            columns = [c for c in _SAME if c in swept]
            if len(alone) != len(swept) or not alone[columns].equals(swept[columns]):
                unequal.append(tid)
                continue
            n_test = int(swept["n_test"].iloc[0])
            worst = max(worst, max(float((alone[c] - swept[c]).abs().max()) * n_test for c in _CLOSE if c in swept))
    verdict = "every other column equal" if not unequal else f"UNEQUAL rows: {', '.join(unequal)}"
    return f"{count} configurations run alone: accuracies within {worst:.0f} test example(s) of the sweep's, {verdict}"


def table1(rows: pd.DataFrame) -> str:
    cell = rows[(rows["pruner"] == "threshold") & (rows["threshold_factor"] == 1.0) & rows["final"]]
    means = cell.groupby("attributes")[["acc_finetuned", "weights_removed_frac"]].mean()
    ok = all(m.acc_finetuned >= 0.85 and m.weights_removed_frac >= 0.45 for m in means.itertuples())
    return "; ".join(f"{a} attributes {m.acc_finetuned:.1%} at {m.weights_removed_frac:.1%} removed"
                     for a, m in zip(means.index, means.itertuples())) + (" (holds)" if ok else " (FAILS)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--sample", type=float, default=1.0, help="fraction of (a)'s epochs to run and scale up")
    parser.add_argument("--keep", type=Path, default=None, help="keep the sweep folders under this folder")
    parser.add_argument("--alone", type=int, default=6, help="configurations run alone to compare with the sweep")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of an earlier commit (git worktree add DIR REV): its sweep is run too")
    parser.add_argument("--repeat", type=int, default=3,
                        help="sweeps per checkout, alternating between them: the median run is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seeds in args.seeds:
            trees = {"after": None, **({"before": args.before} if args.before else {})}
            # A sweep's wall time on 2 cores varies by a second or more from run to run (Ray's
            # start alone is ~3 s or ~4 s): the median of a few, the checkouts taking turns.
            tries: dict[str, list] = {name: [] for name in trees}
            for attempt in range(args.repeat):
                for name, tree in trees.items():
                    folder = (args.keep or Path(tmp)) / f"seeds{seeds}-{name}-{attempt}"
                    tries[name].append((*run_sweep(seeds, folder, tree), folder))
            runs = {name: sorted(found, key=lambda run: run[0])[len(found) // 2] for name, found in tries.items()}
            rows = runs["after"][2]
            work = model_epochs(rows)
            plain = run_plain(work, args.sample)
            sampled = f", {args.sample:g} of it run and scaled" if args.sample != 1 else ""
            print(f"{seeds} seeds: {rows['trial_id'].nunique()} trials, {sum(work.values())} model-epochs "
                  f"{dict(work)}")
            print(f"  (a) plain loops, {CORES} processes: {plain:.1f} s{sampled}")
            for name, (wall, marks, swept, cpu, folder) in runs.items():
                walls = ", ".join(f"{run[0]:.1f}" for run in tries[name])
                print(f"  (b) prunerlib sweep, end to end ({name}): median {wall:.1f} s of {walls}; "
                      f"{plain / wall:.1f}x")
                print(f"      Table 1, threshold x1.0: {table1(swept)}")
                for phase, seconds in breakdown(marks, folder, swept):
                    print(f"        {phase:<66} {seconds:6.1f} s")
                if cpu:
                    used = sum(cpu.values())
                    print(f"      CPU: {used:.1f} CPU-s of the {wall * CORES:.1f} its wall offers on {CORES} cores "
                          f"({used / (wall * CORES):.0%}): " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                          + f"; this work alone takes >= {used / CORES:.1f} s on {CORES} cores")
            if args.alone:
                print(f"  {single_runs(rows, args.alone)}")


if __name__ == "__main__":
    main()
