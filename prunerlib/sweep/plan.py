"""From a validated spec to the work Tune schedules: packs of trial configurations.

A Tune trial carries a *pack*: configurations that the population engine
(`prunerlib.pipeline.run_pack`) fine-tunes as one batched computation. Packs hold members of
one population (same data, architecture and stage shape); within it they are ordered by
pretraining key, so the packs running side by side pretrain different models at once.

`pack_size: auto` gives each population its share of the parallel Tune slots (CPUs / `cpu`
per trial, capped by `max_concurrent`) — so every slot stays busy with one large pack rather
than several small ones in turn — with at most as many members as `population.members_that_fit`
lets share one step. A search asks its study for a batch of
points per Tune trial: a quarter of the points per slot at most, so the sampler still sees
several rounds of results.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from operator import attrgetter

from prunerlib import registry
from prunerlib.config import PRETRAIN_SETTINGS, TrialConfig
from prunerlib.registry import PRUNERS
from prunerlib.population import members_that_fit, population_key
from prunerlib.sweep.checks import PER_SEED
from prunerlib.sweep.search_spec import Range
from prunerlib.sweep.spec import SweepSpec

SEARCH_ROUNDS = 4  # auto: the study gets at least this many rounds of results per slot


@dataclass(frozen=True)
class Pack:
    label: str  # what Tune shows for the trial; unique within the sweep
    members: tuple[TrialConfig, ...]


def slots(spec: SweepSpec, cpus: float, gpus: float) -> int:
    """How many Tune trials the sweep plans for at once: `max_concurrent` when the spec sets it,
    even beyond what the cluster holds now (an autoscaler adds nodes only for trials waiting to
    run), else as many as `cpus` and `gpus` hold."""
    return planned(spec, trials_held(spec, cpus, gpus))


def planned(spec: SweepSpec, held: int) -> int:
    """Tune trials planned at once when the nodes hold `held`: `max_concurrent` if set, else them."""
    return spec.max_concurrent or max(1, held)


def trials_held(spec: SweepSpec, cpus: float, gpus: float) -> int:
    """How many trials one node (or one pool) with these resources runs side by side."""
    fit = int(cpus // spec.cpu)
    return min(fit, int(gpus // spec.gpu)) if spec.gpu else fit


def grid_packs(spec: SweepSpec, parallel: int = 1) -> list[Pack]:
    populations: dict[tuple, list[TrialConfig]] = {}
    for cfg in spec.grid:
        populations.setdefault(population_key(cfg), []).append(cfg)
    packs: list[Pack] = []
    total = len(spec.grid)
    for members in populations.values():
        # Grouped by pretraining settings (what pretrain_key digests, compared directly: ten
        # times cheaper than the digest, which counts in a 10^5-configuration plan).
        members.sort(key=attrgetter(*PRETRAIN_SETTINGS))
        # Auto: each population gets its share of the slots (at least one pack), and no pack
        # outgrows what fits one step; the packs of a population are of even size.
        # A GPU pack is not capped here: the driver cannot see the workers' GPUs, and run_pack
        # splits a pack by the memory of the GPU share it runs on.
        cap = len(members) if spec.gpu else members_that_fit(members[0], "cpu")
        share = max(1, round(parallel * len(members) / total), math.ceil(len(members) / cap))
        if share > parallel:  # whole rounds: every slot busy until the last round ends
            share = math.ceil(share / parallel) * parallel
        size = spec.pack_size or math.ceil(len(members) / share)
        for start in range(0, len(members), size):
            chunk = tuple(members[start: start + size])
            name = _short(chunk[0]) if len(chunk) == 1 else f"{len(chunk)} configs"
            packs.append(Pack(f"p{len(packs):03d} {name}", chunk))
    return packs


def search_batch(spec: SweepSpec, parallel: int = 1) -> int:
    """Points per Tune trial of a search (each point runs at every seed)."""
    assert spec.search is not None
    if spec.pack_size:
        return max(1, spec.pack_size // len(spec.seeds))
    return max(1, math.ceil(spec.search.num_samples / (SEARCH_ROUNDS * parallel)))


def config_text(cfg: TrialConfig) -> str:
    """A short name for a configuration: its pruner and the settings that make it differ."""
    parts = [cfg.pruner if cfg.pruner != "random" else f"random~{cfg.match}"]
    method = PRUNERS[cfg.mirrored_pruner]
    if not method.companion:
        parts += method.describe(cfg)
    for companion in registry.companions():
        if companion.active(cfg):
            parts += companion.describe(cfg)
    if cfg.dataset == "waveform":
        parts.append(f"attrs={cfg.attributes}")
    parts.append(f"seed={cfg.seed}")
    return " ".join(parts)


def _short(cfg: TrialConfig) -> str:
    """A label that survives Tune's 20-character console columns: `p001 dist15 a40 s0`."""
    name = PRUNERS[cfg.pruner].short + (f"~{PRUNERS[cfg.match].short}" if cfg.match else "")
    method = PRUNERS[cfg.mirrored_pruner]
    name += "" if method.companion else method.tag(cfg)
    name += "".join(companion.tag(cfg) for companion in registry.companions() if companion.active(cfg))
    attrs = f" a{cfg.attributes}" if cfg.dataset == "waveform" else ""
    return f"{name}{attrs} s{cfg.seed}"


def plan_text(spec: SweepSpec, cpus: float | None = None, gpus: float | None = None, held: int | None = None) -> str:
    """What `--dry-run` prints: every trial and the resource plan, on `cpus` and `gpus` (default:
    this machine's), which hold `held` trials at once (default: as one pool; a cluster counts
    node by node, since a trial runs on one)."""
    if spec.kind == "sensitivity":
        from prunerlib.sweep.sensitivity import plan_text as scan_plan

        return scan_plan(spec)
    cpus = cpus if cpus is not None else float(os.cpu_count() or 1)
    if gpus is None:
        import torch

        gpus = float(torch.cuda.device_count())
    held = trials_held(spec, cpus, gpus) if held is None else held
    parallel = planned(spec, held)
    size = "auto" if spec.pack_size is None else spec.pack_size
    lines = [f"sweep {spec.name}"]
    if spec.grid:
        packs = grid_packs(spec, parallel)
        lines.append(f"grid: {len(spec.grid)} trial configuration(s) in {len(packs)} Tune trial(s) "
                     f"(pack_size {size}), seeds {list(spec.seeds)}")
        for pack in packs:
            if len(pack.members) == 1:
                lines.append(f"  {pack.label.split()[0]}  {config_text(pack.members[0])}")
            else:
                lines.append(f"  {pack.label}")
                lines.extend(f"      {config_text(cfg)}" for cfg in pack.members)
    if spec.search:
        s = spec.search
        objectives = ", ".join(f"{m} ({mode})" for m, mode in s.objectives)
        batch = search_batch(spec, parallel)
        options = "".join(f", {k} {v}" for k, v in s.sampler_options.items())
        lines.append(f"search: Optuna {s.sampler} sampler (seed {s.seed}{options}), {s.num_samples} point(s) × "
                     f"{len(spec.seeds)} seed(s) = {s.num_samples * len(spec.seeds)} trial configuration(s), "
                     f"{batch} point(s) per Tune trial (pack_size {size}); objectives: {objectives}")
        lines.append(f"  asked in rounds of {parallel} Tune trial(s), each round after every result of the last: "
                     f"the same points on every fresh run with {parallel} slot(s) at once (not across slot "
                     f"counts, nor after --resume)")
        for key, dim in s.space.items():
            shown = (f"{'int ' if dim.integer else ''}{'log-' if dim.log else ''}range [{dim.low:g}, {dim.high:g}]"
                     if isinstance(dim, Range) else f"one of {list(dim)}")
            lines.append(f"  {key}: {shown}")
        if spec.fixed:
            lines.append(f"  fixed: {spec.fixed}")
    data_seed = spec.fixed.get("data_seed", 0)
    lines.append("data split: each seed its own (data_seed = seed)" if data_seed == PER_SEED else
                 f"data split: data_seed {data_seed} for every seed (seeds vary training only)")
    kept = {"final": "each trial's final model", "all_cycles": "every cycle's model", "none": "no model"}
    timed = (f"latency timed at batch {spec.latency_batch} and 1" if spec.latency_batch is not None
             else "latency not timed")
    lines.append(f"keeps: {kept[spec.save_models]} (compacted, in <sweep>/models, save_models); {timed}")
    gpu = f", {spec.gpu:g} GPU" if spec.gpu else ""
    there = f"{cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if spec.gpu else "")
    if held == 0:
        fits = f"; none fits on {there}: " + ("a sweep on a cluster waits for a GPU node, a local one is refused"
                                              if spec.gpu else "a sweep is refused")
        fits += f"; {parallel} at once (max_concurrent) as nodes join" if spec.max_concurrent else ""
    elif parallel > held:
        fits = (f"; {parallel} at once (max_concurrent), {held} of them on {there} now: the rest wait for nodes an "
                f"autoscaler adds")
    else:
        fits = f"; {parallel} at once on {there}"
    lines.append(f"resources: {spec.cpu:g} CPU{gpu} per Tune trial{fits}; "
                 f"{spec.max_failures} retr{'y' if spec.max_failures == 1 else 'ies'} after a fault")
    return "\n".join(lines)
