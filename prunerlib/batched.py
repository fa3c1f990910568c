"""K models of one architecture trained as one computation: the population engine's arithmetic.

A population stacks each parameter of its K members into one (K, ...) tensor (the FFN's
linear layers with their bias as an extra input column). All members step at once: batched
matmuls for linear layers, grouped convolutions for conv layers, and Adam / SGD over the
stacked tensors with each member's own learning rate, weight decay and momentum. Members
never mix: every op is per member, so each one follows its single run's trajectory up to
float rounding (a batched kernel may sum in another order than the single model's kernel).

The FFN's gradient is written out by hand, with activations laid out (K, features, batch): at
a few thousand parameters per member, autograd's per-op bookkeeping costs more than the
arithmetic, and with a 3-wide output layer the batched matmuls run faster in this layout than
batch-first (measured: benchmarks/README.md).

On CPU, `train_population` trains FFN populations with `ffn_kernel` instead when it compiled
(`kernel="auto"`): one C call per epoch that runs all of one member's steps before the next
member's, so a member's state stays in cache and no step pays op dispatch; several times
faster than this batched step (benchmarks/README.md), which stays the fallback and the path
for CNNs and GPUs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from prunerlib import ffn_kernel
from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.masks import Masks
from prunerlib.models import CNN, FFN
from prunerlib.training import epoch_order

# Activation (into `out`), and its derivative in terms of its output (what backward keeps).
_ACTIVATIONS = {
    nn.Sigmoid: (torch.sigmoid, torch.ops.aten.sigmoid_backward),
    nn.Tanh: (torch.tanh, torch.ops.aten.tanh_backward),
    nn.ReLU: (lambda x, out=None: torch.clamp_min(x, 0, out=out),
              lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0)),
}


class Population:
    """Parameters, masks and optimiser of K same-architecture members, stacked."""

    def __init__(self, models: Sequence[nn.Module], masks: Sequence[Masks | None], cfgs: Sequence[TrialConfig]):
        template = models[0]
        if not isinstance(template, (FFN, CNN)):
            raise TypeError(f"no batched forward for {type(template).__name__}")
        self.convolutional = isinstance(template, CNN)
        self.act, self.act_backward = _ACTIVATIONS[type(template.act)]
        self.act_name = type(template.act).__name__.lower()
        names = [name for name, _ in template.named_parameters()]
        params = [torch.stack([dict(m.named_parameters())[name].detach() for m in models]) for name in names]
        # 1 = kept, 0 = pruned: multiplying a gradient by it is what Masks.mask_grads does.
        # None where every member keeps every entry, so the step skips the multiply.
        keep = [_stacked_mask(name, p, masks) for name, p in zip(names, params)]
        if self.convolutional:
            self.params, self.keep = params, keep
        else:
            # Each linear layer as one (K, out, in + 1) tensor, bias last: with inputs that
            # carry a constant 1, one matmul applies weight and bias, and one gives both gradients.
            self.params = [_fold(params[i], params[i + 1]) for i in (0, 2)]
            self.keep = [_fold_mask(keep[i], keep[i + 1], layer) for i, layer in zip((0, 2), self.params)]
        self._hidden: dict[tuple[int, ...], torch.Tensor] = {}
        self.optimizer = BatchedOptimizer(cfgs, self.params)

    @property
    def size(self) -> int:
        return self.params[0].shape[0]

    def retain(self, keep: torch.Tensor) -> None:
        """Continue with the members at positions `keep` only."""
        self.params = [p[keep] for p in self.params]
        self.keep = [m if m is None else m[keep] for m in self.keep]
        self.optimizer.retain(keep)

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module]) -> None:
        for k, model in enumerate(models):
            params = list(model.parameters())
            if self.convolutional:
                for stacked, param in zip(self.params, params):
                    param.copy_(stacked[k])
                continue
            for layer, weight, bias in zip(self.params, params[0::2], params[1::2]):
                weight.copy_(layer[k, :, :-1])
                bias.copy_(layer[k, :, -1])

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The examples as `step` takes them: for the FFN with the constant-1 input."""
        return x if self.convolutional else torch.cat([x, x.new_ones(len(x), 1)], 1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step for every member on its own batch (x: (K, B, *example) taken
        from `inputs`, y: (K, B)); returns the (K,) mean cross-entropy losses before the step."""
        loss, grads = self._conv_gradient(x, y) if self.convolutional else self._ffn_gradient(x, y)
        masked = [(g, m) for g, m in zip(grads, self.keep) if m is not None]
        if masked:
            torch._foreach_mul_([g for g, _ in masked], [m for _, m in masked])
        self.optimizer.step(self.params, grads)
        return loss

    def ffn_epoch(self, table: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor,
                  batch_size: int) -> torch.Tensor:
        """Every step of one epoch with the C kernel (`ffn_kernel.epoch`): member k steps through
        the batches idx[k] splits into (table from `inputs`); returns the (steps, K) losses."""
        opt = self.optimizer
        lr, weight_decay, momentum = zip(*opt.hyper)
        losses = ffn_kernel.epoch(*self.params, exp_avg=opt.exp_avg, exp_avg_sq=opt.exp_avg_sq or None,
                                  keep=self.keep, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                  optimizer=opt.kind, activation=self.act_name, steps_done=opt.step_count,
                                  table=table, labels=labels, order=idx, batch_size=batch_size)
        opt.steps += losses.shape[1]
        opt.step_count += losses.shape[1]
        return losses.T

    def kernel_ready(self, table: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether `ffn_epoch` can train this population on these tensors."""
        return not self.convolutional and ffn_kernel.fits(
            *self.params, state=[*self.optimizer.exp_avg, *self.optimizer.exp_avg_sq], keep=self.keep,
            activation=self.act_name, table=table, labels=labels)

    def _ffn_gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fc1, fc2 = self.params
        hidden = self._hidden_with_ones(fc1.shape[0], fc1.shape[1], x.shape[1])  # (K, H + 1, B)
        self.act(torch.bmm(fc1, x.mT), out=hidden[:, :-1])
        loss, dz = _cross_entropy(torch.bmm(fc2, hidden), y, dim=1)
        da = self.act_backward(torch.bmm(fc2[:, :, :-1].mT, dz), hidden[:, :-1])
        return loss, [torch.bmm(da, x), torch.bmm(dz, hidden.mT)]

    def _hidden_with_ones(self, *shape: int) -> torch.Tensor:
        """A reused (K, H + 1, B) buffer whose last row is 1 (it carries fc2's bias)."""
        k, h, b = shape
        if shape not in self._hidden:
            self._hidden[shape] = torch.ones(k, h + 1, b, dtype=self.params[0].dtype, device=self.params[0].device)
        return self._hidden[shape]

    def _conv_gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        params = [p.detach().requires_grad_(True) for p in self.params]
        conv1_w, conv1_b, conv2_w, conv2_b, fc1_w, fc1_b, fc2_w, fc2_b = params
        # Members side by side as channel groups: one grouped convolution computes every
        # member's convolution with its own filters. Channels-last, because CPU kernels for
        # grouped convolution and pooling vectorise over channels, and K members make many.
        k, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, -1, *x.shape[-2:]).contiguous(memory_format=torch.channels_last)
        for weight, bias in ((conv1_w, conv1_b), (conv2_w, conv2_b)):
            # relu(pool(.)) is exactly pool(relu(.)) (relu is monotone), on a quarter of the values.
            h = torch.relu(F.max_pool2d(F.conv2d(h, weight.flatten(0, 1), bias.flatten(), groups=k), 2))
        h = h.reshape(b, k, -1).permute(1, 2, 0)  # (K, features, B)
        hidden = self.act(torch.baddbmm(fc1_b.unsqueeze(2), fc1_w, h))
        z = torch.baddbmm(fc2_b.unsqueeze(2), fc2_w, hidden)
        loss, dz = _cross_entropy(z.detach(), y, dim=1)
        # Channels-last convolutions return channels-last weight gradients; the fused
        # optimiser reads raw memory, so it must see the parameters' own layout.
        return loss, [g.contiguous() for g in torch.autograd.grad(z, params, dz)]


def _cross_entropy(z: torch.Tensor, y: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member mean cross-entropy of logits `z` (members first, classes along `dim`, the
    batch along the other dimension), and its gradient w.r.t. them: softmax - one-hot."""
    log_p = torch.log_softmax(z, dim)
    label = y.unsqueeze(dim)
    loss = log_p.gather(dim, label).mean((1, 2)).neg_()
    grad = log_p.exp_().scatter_add_(dim, label, torch.full_like(label, -1, dtype=z.dtype))
    return loss, grad.div_(y.shape[1])


def _fold(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.cat([weight, bias.unsqueeze(-1)], -1)


def _fold_mask(weight: torch.Tensor | None, bias: torch.Tensor | None, layer: torch.Tensor) -> torch.Tensor | None:
    if weight is None and bias is None:
        return None
    ones = layer.new_ones(layer.shape)
    return _fold(ones[..., :-1] if weight is None else weight, ones[..., -1] if bias is None else bias)


def _stacked_mask(name: str, param: torch.Tensor, masks: Sequence[Masks | None]) -> torch.Tensor | None:
    kept = [m.tensors.get(name) if m is not None else None for m in masks]
    if all(k is None or bool(k.all()) for k in kept):
        return None
    ones = torch.ones(param.shape[1:], dtype=torch.bool, device=param.device)
    return torch.stack([ones if k is None else k for k in kept]).to(param.dtype)


class BatchedOptimizer:
    """torch.optim.Adam / SGD (as `training.make_optimizer` builds them) for K members at once,
    each with its own hyper-parameters. A fresh one per stage, like `training.train`."""

    BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which make_optimizer keeps

    def __init__(self, cfgs: Sequence[TrialConfig], params: list[torch.Tensor]):
        kinds = {cfg.optimizer for cfg in cfgs}
        if len(kinds) != 1:
            raise ValueError(f"one optimiser type per population, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.hyper = [(cfg.lr, cfg.weight_decay, cfg.momentum if self.kind == "sgd" else 0.0) for cfg in cfgs]
        self.blocks = self._blocks()
        self.exp_avg = [torch.zeros_like(p) for p in params]  # Adam's first moment, or SGD's momentum buffer
        self.exp_avg_sq = [torch.zeros_like(p) for p in params] if self.kind == "adam" else []
        # The step count twice: on the device for the fused Adam kernel, and on the host for
        # SGD's first-step rule, so that no step waits on the device to read it.
        self.steps = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.step_count = 0

    def retain(self, keep: torch.Tensor) -> None:
        self.hyper = [self.hyper[i] for i in keep.tolist()]
        self.blocks = self._blocks()
        self.exp_avg = [t[keep] for t in self.exp_avg]
        self.exp_avg_sq = [t[keep] for t in self.exp_avg_sq]

    def _blocks(self) -> list[tuple[slice | None, tuple[float, float, float]]]:
        """Runs of consecutive members with equal hyper-parameters: row blocks that one update
        with scalar hyper-parameters serves (a row block of a stacked tensor is contiguous).
        None for rows when one block holds everyone."""
        blocks, start = [], 0
        for hyper, run in groupby(self.hyper):
            count = len(list(run))
            blocks.append((slice(start, start + count), hyper))
            start += count
        return [(None, blocks[0][1])] if len(blocks) == 1 else blocks

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        self.steps += 1
        self.step_count += 1
        for rows, (lr, weight_decay, momentum) in self.blocks:
            block = lambda tensors: tensors if rows is None else [t[rows] for t in tensors]  # noqa: E731
            if self.kind == "adam":
                # torch.optim.Adam(fused=True)'s kernel: one pass over the block.
                torch._fused_adam_(block(params), block(grads), block(self.exp_avg), block(self.exp_avg_sq),
                                   [], [self.steps] * len(params), lr=lr, beta1=self.BETAS[0],
                                   beta2=self.BETAS[1], weight_decay=weight_decay, eps=self.EPS,
                                   amsgrad=False, maximize=False)
            else:
                for p, g, buf in zip(block(params), block(grads), block(self.exp_avg)):
                    self._sgd(p, g, buf, lr, weight_decay, momentum)

    def _sgd(self, param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, lr: float,
             weight_decay: float, momentum: float) -> None:
        # torch.optim.SGD's single-tensor step without dampening or Nesterov.
        if weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        if momentum:
            if self.step_count == 1:
                buf.copy_(grad)
            else:
                buf.mul_(momentum).add_(grad)
            grad = buf
        param.add_(grad, alpha=-lr)


@dataclass
class PopulationStageLog:
    """What a population's training stage returns (`training.StageLog` is a single model's)."""
    wall_s: float
    failures: dict[int, tuple[int, float]]  # member position -> (epoch, first non-finite loss)

Kernel = Literal["auto", "c", "torch"]


def train_population(pop: Population, data: Data, seeds: Sequence[int], *, epochs: int, batch_size: int,
                     desc: str = "fine-tune", progress: bool = False, kernel: Kernel = "auto",
                     after_epoch: Callable[[int, list[int]], Collection[int]] | None = None) -> PopulationStageLog:
    """`training.train` for every member at once: member k draws its batches (and flips) from
    a generator seeded `seeds[k]`, as its single run would. A member whose loss goes
    non-finite is dropped at the end of that epoch (its single run would have stopped there
    with TrainingDiverged); the others go on. On return `pop` holds the surviving members,
    in their original order.

    kernel: how an epoch's steps run. "c": the compiled FFN kernel (`ffn_kernel`), one C call
    an epoch; raises RuntimeError for a population it cannot train (a CNN, images, a GPU) or
    when it does not load here. "torch": the batched torch step (`Population.step`). "auto":
    the kernel wherever it can run and loads, else the torch step.

    after_epoch(epoch, alive): called after each epoch (1-based) with the original positions of
    the members still training, in `pop`'s order; the positions it returns stop there (an
    early stop: the caller has written their weights back first)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    device = data.train_x.device
    n = len(data.train_y)
    table = pop.inputs(data.train_x)
    alive = list(range(pop.size))  # original positions of the members still in `pop`
    # Members with one seed draw one sequence: draw it once for all of them.
    orders = {seed: torch.Generator().manual_seed(seed) for seed in seeds}
    failures: dict[int, tuple[int, float]] = {}
    use_kernel = uses_kernel(kernel, pop, data, table)
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=not progress or None)
    for epoch in bar:
        drawn = {seed: epoch_order(n, batch_size, order, data.flip) for seed, order in orders.items()}
        idx = torch.stack([drawn[seeds[k]][0] for k in alive]).to(device)
        flips = torch.stack([drawn[seeds[k]][1] for k in alive]).to(device) if data.flip else None
        if use_kernel:
            losses_t = pop.ffn_epoch(table, data.train_y, idx, batch_size)
        else:
            losses = []
            for lo in range(0, n, batch_size):
                batch = idx[:, lo:lo + batch_size]
                x = table.index_select(0, batch.flatten()).view(*batch.shape, *table.shape[1:])
                y = data.train_y.index_select(0, batch.flatten()).view(batch.shape)
                if flips is not None:
                    x = torch.where(flips[:, lo:lo + batch_size, None, None, None], x.flip(-1), x)
                losses.append(pop.step(x, y))
            losses_t = torch.stack(losses)
        bad = ~torch.isfinite(losses_t).all(0)
        if bad.any():  # the epoch's one look at the device (a GPU run syncs here only)
            for pos in bad.nonzero().flatten().tolist():
                column = losses_t[:, pos]
                failures[alive[pos]] = (epoch + 1, column[~torch.isfinite(column)][0].item())
            alive = _leave(pop, alive, set(failures))
        if after_epoch is not None and alive:
            alive = _leave(pop, alive, set(after_epoch(epoch + 1, alive)))
        orders = {seed: orders[seed] for seed in {seeds[k] for k in alive}}
        bar.set_postfix(members=len(alive))
        if not alive:
            break
    bar.close()
    return PopulationStageLog(time.perf_counter() - start, failures)


def _leave(pop: Population, alive: list[int], leaving: set[int]) -> list[int]:
    """The members at original positions `leaving` leave `pop`; returns who is still in it."""
    if not leaving & set(alive):
        return alive
    keep = [pos for pos, k in enumerate(alive) if k not in leaving]
    pop.retain(torch.tensor(keep, dtype=torch.long, device=pop.params[0].device))
    return [alive[pos] for pos in keep]


def uses_kernel(kernel: Kernel, pop: Population, data: Data, table: torch.Tensor) -> bool:
    """Whether `train_population` steps `pop` with the C kernel (`kernel` as it takes it)."""
    if kernel not in ("auto", "c", "torch"):
        raise ValueError(f"kernel: {kernel!r} is not one of 'auto', 'c', 'torch'")
    if kernel == "torch":
        return False
    if data.flip or not pop.kernel_ready(table, data.train_y):
        if kernel == "c":
            raise RuntimeError("kernel='c': the FFN kernel trains only FFN populations on CPU float32 tensors; "
                               "use kernel='auto' or 'torch' for this one")
        return False
    if ffn_kernel.load() is None:
        if kernel == "c":
            raise RuntimeError("kernel='c': the FFN kernel did not load (no C compiler, a failed build or "
                               "PRUNERLIB_FFN_KERNEL=0; see the warning logged); use kernel='auto' or 'torch'")
        return False
    return True
