"""What a population is: which trials may share one (`population_key`), how many fit on a
device (`members_that_fit`), and how it fine-tunes (`FineTuning`). The trial lifecycle that
uses them, for a single trial and a pack alike, is `pipeline.run_pack`; nothing here knows it.

Small trials spend their time on per-step overhead, not arithmetic; K members stepping
together pay that overhead once (see `batched`). Each member's batches come from its own
seeded generator, so a member draws exactly what its single run draws.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from prunerlib.batched import Kernel, Population, PopulationStageLog, uses_kernel, train_population
from prunerlib.config import POPULATION_SETTINGS, TrialConfig
from prunerlib.datasets import Data
from prunerlib.errors import EnvironmentFault, TrainingDiverged, is_out_of_memory
from prunerlib.masks import Masks
from prunerlib.models import FFN, build_model
from prunerlib.training import StageLog, accuracy, diverged, plateaued, train

log = logging.getLogger("prunerlib.population")

# On CPU, caches rather than memory bound a population: past about a hundred FFN members a
# step stops getting cheaper per member, and a CNN population of 32 trains slower per member
# than one of 16 (measured: benchmarks/README.md).
_CPU_CAP = 128
_CPU_BUDGET = 256 * 2**20


def population_key(cfg: TrialConfig) -> tuple[Any, ...]:
    """Members with equal keys can be fine-tuned as one population: they share the data (one
    copy serves all), the architecture (parameters stack) and the shape of a fine-tuning stage
    (members step in lock-step); `config.POPULATION_SETTINGS` says which settings those are."""
    return tuple((name, repr(getattr(cfg, name))) for name in POPULATION_SETTINGS)


def finetune_seed(cfg: TrialConfig, cycle: int) -> int:
    """Seed of a fine-tuning stage's data order (and flips)."""
    return cfg.seed + 1000 * cycle


class Member(Protocol):
    """What fine-tuning reads of a trial (`pipeline.TrialState`); its model is trained in place."""

    cfg: TrialConfig
    model: nn.Module
    masks: Masks


class FineTuning:
    """One population's fine-tuning stages, cycle after cycle.

    A population of one fine-tunes with `training.train`, the plain torch loop; a larger one
    as one batched `Population`. The two sum in different orders and so differ by float
    rounding: which one runs is fixed by the population's size, never by how many of its
    members are still going, so a trial run alone gives the rows it always gave."""

    def __init__(self, size: int, kernel: Kernel = "auto"):
        self.alone = size == 1
        self.kernel = kernel  # batched FFN steps: the compiled kernel (auto, c) or torch (see batched)
        # Models stepped at once (a random control's shadow is one more): halved on out of
        # memory, and kept halved for later cycles.
        self.limit = 2 * size

    def run(self, members: Sequence[Member], data: Data, cycle: int, progress: bool) -> PopulationStageLog:
        """Fine-tune every member's model for cycle `cycle`. A member whose loss went non-finite
        is in `failures` by its position in `members`, its model left as it was; alone, it
        raises TrainingDiverged instead (training.train's own message, which names the same
        stage). Out of memory, a part is halved and tried again (a member's model changes
        only once its part has finished, so a retry starts from the same weights). A member
        that does not fit alone is the machine's limit, not the configuration's: an
        EnvironmentFault for the sweep to retry elsewhere, never a row."""
        if self.alone:
            wall = sum(train(m.model, data, m.cfg, epochs=m.cfg.epochs_finetune, seed=finetune_seed(m.cfg, cycle),
                             masks=m.masks, desc=f"fine-tune {cycle}/{m.cfg.cycles}", progress=progress).wall_s
                       for m in members)
            return PopulationStageLog(wall, {})
        wall, failures, at = 0.0, {}, 0
        while at < len(members):
            part = members[at:at + self.limit]
            try:
                stage = _finetune_together(part, data, cycle, progress, self.kernel)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                device = data.train_x.device
                if len(part) == 1:
                    raise EnvironmentFault(f"out of {device.type} memory fine-tuning one {part[0].cfg.model} alone "
                                           f"(config {part[0].cfg.config_hash()}): "
                                           f"{str(exc).splitlines()[0][:160]}") from exc
                gc.collect()  # drop the failed attempt's stacked tensors before the allocator is asked to let go
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                self.limit = max(1, len(part) // 2)
                log.warning("out of %s memory fine-tuning %d members; retrying %d at a time",
                            device.type, len(part), self.limit)
                continue
            wall += stage.wall_s
            failures.update({at + pos: failure for pos, failure in stage.failures.items()})
            at += len(part)
        return PopulationStageLog(wall, failures)


def _finetune_together(members: Sequence[Member], data: Data, cycle: int, progress: bool,
                       kernel: Kernel) -> PopulationStageLog:
    """Fine-tune the members as one batched population, then hand each its weights back.
    Failures are keyed by position in `members`."""
    # Members with equal optimiser settings side by side: each such run is one fused update.
    order = sorted(range(len(members)), key=lambda i: (members[i].cfg.lr, members[i].cfg.weight_decay,
                                                       members[i].cfg.momentum))
    ordered = [members[i] for i in order]
    cfg = ordered[0].cfg
    pop = Population([m.model for m in ordered], [m.masks for m in ordered], [m.cfg for m in ordered])
    stage = train_population(pop, data, [finetune_seed(m.cfg, cycle) for m in ordered],
                             epochs=cfg.epochs_finetune, batch_size=cfg.batch_size,
                             desc=f"fine-tune {cycle} ({len(members)} members)", progress=progress, kernel=kernel)
    pop.write_back([m.model for pos, m in enumerate(ordered) if pos not in stage.failures])
    return PopulationStageLog(stage.wall_s, {order[pos]: failure for pos, failure in stage.failures.items()})


def pretrain_models(models: Sequence[nn.Module], cfgs: Sequence[TrialConfig], data: Data,
                    progress: bool = True) -> list[StageLog | TrainingDiverged]:
    """Pretrain each model in place as its config says (`epochs_pretrain`, `pretrain_stop`,
    seeded by `cfg.seed`); returns each one's log, or the TrainingDiverged its single run raises.

    FFNs the compiled kernel can train (on the CPU) pretrain as populations of every model of
    one shape and stage there, whatever their number: the kernel runs each member's steps on
    their own, so a model comes out the same, to the bit, pretrained alone (`prunerlib run`) or
    beside others (a pack), and the store cannot tell who trained it. Each stops at its own
    plateau. Every other model trains alone with `training.train`."""
    logs: list[StageLog | TrainingDiverged | None] = [None] * len(models)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (model, cfg) in enumerate(zip(models, cfgs)):
        shape = tuple(p.shape for p in model.parameters())
        groups.setdefault((type(model), type(model.act), shape, cfg.batch_size, cfg.epochs_pretrain,
                           cfg.optimizer), []).append(i)
    for group in groups.values():
        # Only an FFN on the CPU can be the kernel's: no stacked copy of anything else.
        on_kernel = isinstance(models[group[0]], FFN) and data.train_x.device.type == "cpu"
        pop = Population([models[i] for i in group], [None] * len(group), [cfgs[i] for i in group]) \
            if on_kernel else None
        if pop is None or not uses_kernel("auto", pop, data, pop.inputs(data.train_x)):
            for i in group:
                try:
                    logs[i] = train(models[i], data, cfgs[i], epochs=cfgs[i].epochs_pretrain, seed=cfgs[i].seed,
                                    plateau=cfgs[i].pretrain_stop == "plateau", desc="pretrain", progress=progress)
                except TrainingDiverged as exc:
                    logs[i] = exc
            continue
        curves: dict[int, list[float]] = {k: [] for k in range(len(group))}

        def after_epoch(epoch: int, alive: list[int], group: list[int] = group, pop: Population = pop,
                        curves: dict[int, list[float]] = curves) -> list[int]:
            pop.write_back([models[group[k]] for k in alive])
            stop = []
            for k in alive:
                cfg = cfgs[group[k]]
                curves[k].append(accuracy(models[group[k]], data.val_x, data.val_y))
                if cfg.pretrain_stop == "plateau" and plateaued(curves[k], cfg.patience, cfg.min_delta):
                    stop.append(k)
            return stop

        cfg = cfgs[group[0]]
        stage = train_population(pop, data, [cfgs[i].seed for i in group], epochs=cfg.epochs_pretrain,
                                 batch_size=cfg.batch_size, desc=f"pretrain ({len(group)} models)",
                                 progress=progress, kernel="c", after_epoch=after_epoch)
        for k, i in enumerate(group):
            if k in stage.failures:
                epoch, loss = stage.failures[k]
                logs[i] = diverged(loss, epoch, "pretrain")
            else:
                logs[i] = StageLog(epochs_run=len(curves[k]), wall_s=stage.wall_s / len(group), val_acc=curves[k])
    return logs  # type: ignore[return-value]  # every position is filled


def members_that_fit(cfg: TrialConfig, device: torch.device | str, budget_bytes: int | None = None,
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
    shared data only while its pruners decide), a copy of the last accepted model under max_acc_drop,
    and, for a random control that mirrors its method over cycles, the method's own trial.
    Its share of the population: stacked parameters, gradient-mask and optimiser moments,
    gradients and an update temporary, its batch (the gathered copy, and for images the
    flipped copy, the blend and the channel-grouped layout), and the activations kept for
    backward."""
    in_shape = (cfg.attributes,) if cfg.model == "ffn" else (3, cfg.image_size, cfg.image_size)
    classes = 3 if cfg.dataset == "waveform" else 2
    model, per_example = _shape_of(cfg, in_shape, classes)
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
    per_example = _shape_of(cfg, in_shape, classes)[1]
    examples = cfg.n if cfg.dataset == "waveform" else 2 * (cfg.train_per_class + cfg.test_per_class)
    patterns = min(cfg.distinct_max_patterns, examples)
    data = 4 * examples * (math.prod(in_shape) + 1)
    return data + 4 * max(patterns, 1024) * (math.prod(in_shape) + per_example)


def _shape_of(cfg: TrialConfig, in_shape: tuple[int, ...], classes: int) -> tuple[nn.Module, int]:
    """The model `cfg` builds, and its activations' size for one example. Built and run on the
    CPU, not the meta device: a meta forward pass imports torch._dynamo, about a second of a
    driver's or worker's start, for a model of at most a few million parameters."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, in_shape[0], classes)
    with torch.no_grad():
        return model, _activation_numel(model, torch.zeros(1, *in_shape))


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

