"""From a validated spec to the work Tune schedules: packs of trial configurations.

A Tune trial carries a *pack*: one or more configurations run together. Members of a pack
share a pretraining key wherever possible, so a pack pretrains (or loads) one model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prunerlib.config import TrialConfig
from prunerlib.sweep.spec import Range, SweepSpec


@dataclass(frozen=True)
class Pack:
    label: str  # what Tune shows for the trial; unique within the sweep
    members: tuple[TrialConfig, ...]


def grid_packs(spec: SweepSpec) -> list[Pack]:
    """The grid's configurations in packs of at most `spec.pack_size`, grouped by pretraining key."""
    by_key: dict[str, list[TrialConfig]] = {}
    for cfg in spec.grid:
        by_key.setdefault(cfg.pretrain_key(), []).append(cfg)
    packs: list[Pack] = []
    for members in by_key.values():
        for start in range(0, len(members), spec.pack_size):
            chunk = tuple(members[start: start + spec.pack_size])
            name = _short(chunk[0]) if len(chunk) == 1 else f"{len(chunk)}x s{chunk[0].seed}"
            packs.append(Pack(f"p{len(packs):03d} {name}", chunk))
    return packs


def _short(cfg: TrialConfig) -> str:
    """A label that survives Tune's 20-character console columns: `p001 dist15 a40 s0`."""
    abbrev = {"distinctiveness": "dist", "threshold": "thr", "filters": "filt", "none": "none", "random": "rand"}
    name = abbrev[cfg.pruner] + (f"~{abbrev[cfg.match]}" if cfg.match else "")
    method = cfg.mirrored_pruner
    name += f"{cfg.angle_cutoff:g}" if method == "distinctiveness" else ""
    name += f"{cfg.threshold_factor:g}" if method == "threshold" else ""
    if cfg.prunes_filters:
        name += f" {cfg.filter_criterion[:3]}:" + "/".join(map(str, cfg.filter_counts()))
    attrs = f" a{cfg.attributes}" if cfg.dataset == "waveform" else ""
    return f"{name}{attrs} s{cfg.seed}"


def describe(cfg: TrialConfig) -> str:
    """A short name for a configuration: its pruner and the settings that make it differ."""
    parts = [cfg.pruner if cfg.pruner != "random" else f"random~{cfg.match}"]
    method = cfg.mirrored_pruner
    if method == "distinctiveness":
        parts.append(f"cutoff={cfg.angle_cutoff:g}")
    if method == "threshold":
        parts.append(f"factor={cfg.threshold_factor:g}")
    if cfg.prunes_filters:
        parts.append(f"filters={cfg.filter_criterion}:" + ",".join(map(str, cfg.filter_counts())))
    if cfg.dataset == "waveform":
        parts.append(f"attrs={cfg.attributes}")
    parts.append(f"seed={cfg.seed}")
    return " ".join(parts)


def plan_text(spec: SweepSpec, cluster_cpus: float | None = None, cluster_gpus: float | None = None) -> str:
    """What `--dry-run` prints: every trial and the resource plan."""
    cpus = cluster_cpus if cluster_cpus is not None else float(os.cpu_count() or 1)
    fit = int(cpus // spec.cpu) if spec.gpu == 0 else min(int(cpus // spec.cpu), int((cluster_gpus or 0) // spec.gpu))
    concurrent = min(fit, spec.max_concurrent) if spec.max_concurrent else fit
    lines = [f"sweep {spec.name}"]
    if spec.grid:
        packs = grid_packs(spec)
        lines.append(f"grid: {len(spec.grid)} trial configuration(s) in {len(packs)} Tune trial(s) "
                     f"(pack size up to {spec.pack_size}), seeds {list(spec.seeds)}")
        for pack in packs:
            if len(pack.members) == 1:
                lines.append(f"  {pack.label.split()[0]}  {describe(pack.members[0])}")
            else:
                lines.append(f"  {pack.label}")
                lines.extend(f"      {describe(cfg)}" for cfg in pack.members)
    if spec.search:
        s = spec.search
        objectives = ", ".join(f"{m} ({mode})" for m, mode in s.objectives)
        lines.append(f"search: Optuna {s.sampler} sampler, {s.num_samples} point(s) × {len(spec.seeds)} seed(s) "
                     f"= {s.num_samples * len(spec.seeds)} trial configuration(s); objectives: {objectives}")
        for key, dim in s.space.items():
            shown = (f"{'int ' if dim.integer else ''}{'log-' if dim.log else ''}range [{dim.low:g}, {dim.high:g}]"
                     if isinstance(dim, Range) else f"one of {list(dim)}")
            lines.append(f"  {key}: {shown}")
        if spec.fixed:
            lines.append(f"  fixed: {spec.fixed}")
    gpu = f", {spec.gpu:g} GPU" if spec.gpu else ""
    lines.append(f"resources: {spec.cpu:g} CPU{gpu} per Tune trial; {concurrent} at once on {cpus:g} CPU(s)"
                 + (f" and {cluster_gpus:g} GPU(s)" if spec.gpu else "")
                 + f"; {spec.max_failures} retr{'y' if spec.max_failures == 1 else 'ies'} after a fault")
    return "\n".join(lines)
