"""Many trials as one computation: `run_pack` gives each configuration exactly the rows
`pipeline.run_trial` would, but fine-tunes every compatible member in one batched population.

Small trials spend their time on per-step overhead, not arithmetic; K members stepping
together pay that overhead once (see `batched`). Everything a member decides stays its own:
pretraining comes from the shared store (`load_or_pretrain`, once per pretrain key), the
unchanged pruners plan on an ordinary `nn.Module` holding the member's weights
(`pipeline.TrialState`), and each member's batches come from its own seeded generator.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from prunerlib.batched import Population, StageResult, train_population
from prunerlib.config import TrialConfig
from prunerlib.datasets import Data, load_data
from prunerlib.errors import ConfigError, DataError, EnvironmentFault, is_out_of_memory
from prunerlib.models import build_model
from prunerlib.pipeline import (TrialState, Workdirs, failed_rows, finetune_seed, identity_columns,
                                resolve_device, run_trial)
from prunerlib.pretrained import load_or_pretrain
from prunerlib.records import device_provenance
from prunerlib.pruners.threshold import threshold_params
from prunerlib.training import diverged, set_numerics

log = logging.getLogger("prunerlib.population")

Rows = list[dict[str, Any]]

# Settings a population shares: the data (so one copy serves every member), the architecture
# (so parameters stack), and the shape of a fine-tuning stage (so members step in lock-step).
# Everything else — seed, pretraining, pruner settings, cycles, learning rate, weight decay,
# momentum — stays per member.
_SHARED = (
    "dataset", "data", "attributes", "n", "test_frac", "val_frac", "data_seed", "train_per_class",
    "test_per_class", "image_size", "model", "hidden", "activation", "conv_channels",
    "batch_size", "epochs_finetune", "optimizer", "device", "exact",
)

# On CPU, caches rather than memory bound a population: past ~100 FFN members (~10 MB) a
# step stops getting cheaper per member, and a CNN population of 32 (~500 MB) trains slower
# per member than one of 16 (one thread: 0.39 against 0.34 s per model-epoch).
_CPU_CAP = 128
_CPU_BUDGET = 256 * 2**20


def population_key(cfg: TrialConfig) -> tuple[Any, ...]:
    """Members with equal keys can be fine-tuned as one population."""
    return tuple((name, repr(getattr(cfg, name))) for name in _SHARED)


MemberDone = Callable[[int, Rows], None]


def run_pack(cfgs: Sequence[TrialConfig], dirs: Workdirs, *, sweep: str | None = None,
             trial_ids: Sequence[str] | None = None, progress: bool = False,
             gpu_share: float = 1.0, on_member_done: MemberDone | None = None,
             device: torch.device | str | None = None) -> list[Rows]:
    """Rows for each member, in order — for each member exactly what
    run_trial(cfg, dirs, sweep=..., trial_id=...) would return (same columns, same failed- and
    error-row behaviour). Members sharing a `population_key` are fine-tuned together, in
    populations of at most `pack_size_for` members; a member alone in its population runs as a
    plain trial. Bad settings or unusable data raise before any training, as in run_trial; a
    diverging or crashing member gets its row and the others go on. A fault of the machine
    (`errors.is_environment_fault`) raises out of run_pack: `on_member_done(index, rows)` is
    called the moment each member's rows are final, so what finished before it is kept.

    `wall_finetune_s` of a population member is its share of the stage: the stage's wall time
    divided by the members that started it, so summing over rows still gives time spent.

    `device`, when given, replaces each member's resolved `device` setting, as in run_trial."""
    ids: Sequence[str | None] = trial_ids if trial_ids is not None else [None] * len(cfgs)
    if len(ids) != len(cfgs):
        raise ValueError(f"{len(cfgs)} configurations but {len(ids)} trial ids")
    groups: dict[tuple[Any, ...], list[int]] = {}
    for pos, cfg in enumerate(cfgs):
        groups.setdefault(population_key(cfg), []).append(pos)
    results: list[Rows] = [[] for _ in cfgs]

    def done(pos: int, rows: Rows) -> None:
        results[pos] = rows
        if on_member_done is not None:
            on_member_done(pos, rows)

    for group in groups.values():
        where = torch.device(device) if device is not None else resolve_device(cfgs[group[0]].device)
        set_numerics(where, cfgs[group[0]].exact)  # before the first CUDA call: see set_numerics
        if where.type == "cuda":  # a 0.25-GPU trial must not take the card from the other three
            torch.cuda.set_per_process_memory_fraction(min(1.0, float(gpu_share)), where)
        size = pack_size_for(cfgs[group[0]], where, gpu_share=gpu_share)
        for members in (group[at:at + size] for at in range(0, len(group), size)):
            if len(members) == 1:
                (pos,) = members
                done(pos, run_trial(cfgs[pos], dirs, sweep=sweep, trial_id=ids[pos], progress=progress, device=where))
                continue
            _run_population([cfgs[p] for p in members], dirs, sweep, [ids[p] for p in members], progress,
                            lambda i, rows, members=members: done(members[i], rows), where)
    return results


def _run_population(cfgs: list[TrialConfig], dirs: Workdirs, sweep: str | None, ids: list[str | None],
                    progress: bool, done: MemberDone, device: torch.device) -> None:
    bases = [identity_columns(cfg, sweep, tid) for cfg, tid in zip(cfgs, ids)]
    columns = device_provenance(device)
    for base in bases:
        base |= columns
    data = load_data(cfgs[0], dirs.image_cache).to(device)
    _check_settings(cfgs, data)
    states: dict[int, TrialState] = {}
    pretrain_failures: dict[str, Exception] = {}
    limit = [len(cfgs) * 2]  # members per fine-tuning step (shadows included); halved on out-of-memory

    def fail(i: int, exc: Exception) -> None:
        rows = failed_rows(bases[i], exc)  # raises a fault of the machine: retried, never recorded
        states.pop(i, None)
        done(i, rows)

    def finish(i: int) -> None:
        done(i, [bases[i] | row for row in states.pop(i).finish()])

    for i, cfg in enumerate(cfgs):
        # One pretraining per key: a key that failed is not retried for the next member.
        key = cfg.pretrain_key()
        try:
            if key in pretrain_failures:
                raise pretrain_failures[key]
            model, pre = load_or_pretrain(cfg, data, dirs.pretrained, device, progress)
            states[i] = TrialState(cfg, data, model, pre)
        except (ConfigError, DataError):
            raise
        except Exception as exc:  # noqa: BLE001  a failed member is a row, as in run_trial
            pretrain_failures.setdefault(key, exc)
            fail(i, exc)

    for cycle in range(1, max(cfg.cycles for cfg in cfgs) + 1):
        tuning: list[int] = []
        for i in list(states):
            try:
                if states[i].prune(cycle):
                    tuning.append(i)
                else:
                    finish(i)
            except Exception as exc:  # noqa: BLE001
                fail(i, exc)
        if not tuning:
            break
        # A random control's shadow (its method's own trajectory) trains beside it as one more
        # member; it fails with its control.
        tuned = [(i, state) for i in tuning for state in states[i].tuned()]
        stage = _finetune_in_parts([state for _, state in tuned], data, cycle, progress, limit)
        share = stage.wall_s / len(tuning)
        failures = {tuned[pos][0]: failure for pos, failure in stage.failures.items()}
        for i in tuning:
            cfg = cfgs[i]
            try:
                if i in failures:
                    epoch, loss = failures[i]
                    raise diverged(loss, epoch, f"fine-tune {cycle}/{cfg.cycles}")
                if not states[i].record(cycle, share) or cycle == cfg.cycles:
                    finish(i)
            except Exception as exc:  # noqa: BLE001
                fail(i, exc)


def _finetune_in_parts(states: list[TrialState], data: Data, cycle: int, progress: bool,
                       limit: list[int]) -> StageResult:
    """`_finetune` in parts of at most `limit[0]` members. Out of memory, the part is halved
    and tried again (members' models change only once their part has finished, so a retry
    starts from the same weights), and the smaller size is kept for later cycles. A member
    that does not fit alone is the machine's limit, not the configuration's: an
    EnvironmentFault for the sweep to retry elsewhere, never a row."""
    wall, failures, at = 0.0, {}, 0
    while at < len(states):
        part = states[at:at + limit[0]]
        try:
            stage = _finetune(part, data, cycle, progress)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            device = data.train_x.device
            if len(part) == 1:
                raise EnvironmentFault(f"out of {device.type} memory fine-tuning one {part[0].cfg.model} alone "
                                       f"(config {part[0].cfg.config_hash()}): {str(exc).splitlines()[0][:160]}") from exc
            _free_memory(device)
            limit[0] = max(1, len(part) // 2)
            log.warning("out of %s memory fine-tuning %d members; retrying %d at a time",
                        device.type, len(part), limit[0])
            continue
        wall += stage.wall_s
        failures.update({at + pos: failure for pos, failure in stage.failures.items()})
        at += len(part)
    return StageResult(wall, failures)


def _free_memory(device: torch.device) -> None:
    import gc

    gc.collect()  # drop the failed attempt's stacked tensors before the allocator is asked to let go
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _finetune(states: list[TrialState], data: Data, cycle: int, progress: bool) -> StageResult:
    """Fine-tune the members' current models together, then hand each its weights back.
    Failures are keyed by position in `states`."""
    # Members with equal optimiser settings side by side: each such run is one fused update.
    order = sorted(range(len(states)), key=lambda i: (states[i].cfg.lr, states[i].cfg.weight_decay,
                                                      states[i].cfg.momentum))
    ordered = [states[i] for i in order]
    cfg = ordered[0].cfg
    pop = Population([s.model for s in ordered], [s.masks for s in ordered], [s.cfg for s in ordered])
    stage = train_population(pop, data, [finetune_seed(s.cfg, cycle) for s in ordered],
                             epochs=cfg.epochs_finetune, batch_size=cfg.batch_size,
                             desc=f"fine-tune {cycle} ({len(states)} members)", progress=progress)
    pop.write_back([s.model for pos, s in enumerate(ordered) if pos not in stage.failures])
    return StageResult(stage.wall_s, {order[pos]: failure for pos, failure in stage.failures.items()})


def _check_settings(cfgs: Sequence[TrialConfig], data: Data) -> None:
    """Raise now for a setting run_trial would reject only after pretraining."""
    with torch.random.fork_rng(devices=[]):  # build_model seeds the global generator
        template = build_model(cfgs[0], data.in_features, data.classes)
    for cfg in cfgs:
        threshold_params(template, cfg.threshold_layers)


def pack_size_for(cfg: TrialConfig, device: torch.device | str, budget_bytes: int | None = None,
                  gpu_share: float = 1.0) -> int:
    """How many members like `cfg` fit in one population on `device`: the memory budget, less
    what the population holds once (`shared_bytes`), over what each member adds
    (`member_bytes`). On CUDA the budget is 80% of the trial's share of the GPU: of its total
    memory times `gpu_share` (a 0.25-GPU trial shares the card with three others, and
    run_pack caps it there with torch.cuda.set_per_process_memory_fraction) and of what is
    free. On CPU it is _CPU_BUDGET (or half the available memory, if less), and caches rather
    than memory cap a population at _CPU_CAP members."""
    device = torch.device(device)
    if budget_bytes is None:
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            budget_bytes = int(0.8 * min(free, total * gpu_share)) - shared_bytes(cfg)
        else:
            budget_bytes = min(_CPU_BUDGET, _available_memory() // 2)
    fit = max(1, budget_bytes // member_bytes(cfg))
    return fit if device.type == "cuda" else min(fit, _CPU_CAP)


def member_bytes(cfg: TrialConfig) -> int:
    """Memory one population member adds (float32), at the peak of a fine-tuning step.

    Its trial state: the model, masks, the indices of its pruning inputs (gathered from the
    shared data only while it plans), a copy of the last accepted model under max_acc_drop,
    and, for a random control that mirrors its method over cycles, the method's own trial.
    Its share of the population: stacked parameters, gradient-mask and optimiser moments,
    gradients and an update temporary, its batch (the gathered copy, and for images the
    flipped copy, the blend and the channel-grouped layout), and the activations kept for
    backward."""
    in_shape = (cfg.attributes,) if cfg.model == "ffn" else (3, cfg.image_size, cfg.image_size)
    classes = 3 if cfg.dataset == "waveform" else 2
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        model = build_model(cfg, in_shape[0], classes)
        per_example = _activation_numel(model, torch.zeros(1, *in_shape))
    params = sum(p.numel() for p in model.parameters())
    in_numel = math.prod(in_shape) + (cfg.model == "ffn")  # the FFN's inputs carry a constant 1
    trial = 4 * params + params + 8 * cfg.distinct_max_patterns  # model, bool masks, sample indices
    if cfg.max_acc_drop is not None and cfg.cycles > 1:
        trial += 4 * params + params
    moments = 2 if cfg.optimizer == "adam" else 1
    stacked = 4 * params * (1 + 1 + moments + 2)  # parameters, gradient mask, moments, gradients, temporary
    # Kept activations: the FFN's hand-written step keeps every layer's output and its gradient
    # for the whole batch; the CNN's pools before its ReLU and autograd frees each gradient as
    # it goes, so about one per-example set (measured: see tests/test_population.py).
    kept = 1 if cfg.model == "cnn" else 3
    batch = 4 * cfg.batch_size * (in_numel * (4 if cfg.model == "cnn" else 1) + kept * per_example)
    shadow = cfg.shadows_its_method
    return (trial + stacked + batch) * (2 if shadow else 1)


def shared_bytes(cfg: TrialConfig) -> int:
    """Memory a population of `cfg`-like members holds once, whatever its size: the data on the
    device, and the largest transient of pruning or evaluating one member at a time (its
    pruning inputs gathered, their activations, an evaluation batch of 1024)."""
    in_shape = (cfg.attributes,) if cfg.model == "ffn" else (3, cfg.image_size, cfg.image_size)
    classes = 3 if cfg.dataset == "waveform" else 2
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        per_example = _activation_numel(build_model(cfg, in_shape[0], classes), torch.zeros(1, *in_shape))
    examples = cfg.n if cfg.dataset == "waveform" else 2 * (cfg.train_per_class + cfg.test_per_class)
    patterns = min(cfg.distinct_max_patterns, examples)
    data = 4 * examples * (math.prod(in_shape) + 1)
    return data + 4 * max(patterns, 1024) * (math.prod(in_shape) + per_example)


def _activation_numel(model: nn.Module, x: torch.Tensor) -> int:
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
             for m in model.modules() if not list(m.children())]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(sizes)


def _available_memory() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
