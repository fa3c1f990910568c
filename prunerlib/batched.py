"""K models of one architecture trained as one computation: the population engine's arithmetic.

A population keeps every member's parameters in one row of a (K, P) buffer, in the order
`model.parameters()` lists them, so a member moves in and out with `parameters_to_vector`.
The forward pass runs all members at once (batched matmuls for linear layers, grouped
convolutions for conv layers), autograd fills one (K, P) gradient, and the optimiser is a
vectorised copy of `torch.optim.Adam` / `SGD` with each member's own learning rate, weight
decay and momentum. Members never mix: every op is per member, so each one's trajectory is
its single run's up to float rounding (summation order inside a batched kernel).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from prunerlib.config import TrialConfig
from prunerlib.datasets import Data
from prunerlib.masks import Masks
from prunerlib.models import CNN, FFN
from prunerlib.training import epoch_batches

_ACTIVATIONS: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.Sigmoid: torch.sigmoid, nn.Tanh: torch.tanh, nn.ReLU: torch.relu,
}


class Population:
    """Parameters, masks and optimiser state of K same-architecture members, stacked."""

    def __init__(self, models: Sequence[nn.Module], masks: Sequence[Masks | None], cfgs: Sequence[TrialConfig]):
        template = models[0]
        if not isinstance(template, (FFN, CNN)):
            raise TypeError(f"no batched forward for {type(template).__name__}")
        self.template = template
        self.activation = _ACTIVATIONS[type(template.act)]
        self.shapes = [(name, p.shape) for name, p in template.named_parameters()]
        self.flat = torch.stack([parameters_to_vector(m.parameters()).detach() for m in models])
        # 1 = kept, 0 = pruned; multiplying the gradient by it is what Masks.mask_grads does.
        self.keep_mask = torch.stack([_mask_vector(m, mk) for m, mk in zip(models, masks)])
        self.optimizer = BatchedOptimizer(cfgs, self.flat)

    @property
    def size(self) -> int:
        return self.flat.shape[0]

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each parameter of every member as a (K, *shape) view into `flat`."""
        out, at = {}, 0
        for name, shape in self.shapes:
            n = shape.numel()
            out[name] = flat[:, at:at + n].view(-1, *shape)
            at += n
        return out

    def retain(self, keep: torch.Tensor) -> None:
        """Continue with the members at positions `keep` only."""
        self.flat = self.flat[keep]
        self.keep_mask = self.keep_mask[keep]
        self.optimizer.retain(keep)

    def write_back(self, models: Sequence[nn.Module]) -> None:
        with torch.no_grad():
            for row, model in zip(self.flat, models):
                vector_to_parameters(row, model.parameters())

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(K, B, classes) for a (K, B, *example) batch, one slice per member."""
        p = self.views(flat)
        if isinstance(self.template, CNN):
            x = self._conv_features(p, x)
        hidden = self.activation(_linear(p, "fc1", x))
        return _linear(p, "fc2", hidden)

    def _conv_features(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        # Members side by side as channel groups: one grouped convolution computes every
        # member's convolution with its own filters.
        k, b = x.shape[:2]
        x = x.transpose(0, 1).reshape(b, -1, *x.shape[-2:])
        for conv in ("conv1", "conv2"):
            weight, bias = p[f"{conv}.weight"], p[f"{conv}.bias"]
            x = F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1), groups=k)
            x = F.max_pool2d(torch.relu(x), 2)
        return x.reshape(b, k, -1).transpose(0, 1)

    def losses(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy over its batch, (K,)."""
        z = self.logits(flat, x)
        # log-sum-exp written out: log_softmax over a 2- or 3-wide last dimension is slow on CPU.
        shifted = z - z.detach().amax(-1, keepdim=True)
        nll = shifted.exp().sum(-1).log() - shifted.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return nll.mean(1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step for every member on its own batch; returns the (K,) losses."""
        flat = self.flat.requires_grad_(True)
        loss = self.losses(flat, x, y)
        # Members share no parameter, so the sum's gradient is every member's own gradient.
        (grad,) = torch.autograd.grad(loss.sum(), flat)
        self.flat = flat.detach()
        grad.mul_(self.keep_mask)
        self.optimizer.step(self.flat, grad)
        return loss.detach()


def _linear(p: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), x, p[f"{name}.weight"].transpose(1, 2))


def _mask_vector(model: nn.Module, masks: Masks | None) -> torch.Tensor:
    """A member's masks in parameter order (unmasked parameters all 1)."""
    parts = []
    for name, param in model.named_parameters():
        kept = masks.tensors.get(name) if masks is not None else None
        parts.append((kept if kept is not None else torch.ones_like(param, dtype=torch.bool)).flatten())
    return torch.cat(parts).to(param.dtype)


class BatchedOptimizer:
    """torch.optim.Adam / SGD (as `training.make_optimizer` builds them) for K members at once,
    each with its own hyper-parameters. A fresh one per stage, like `training.train`."""

    BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which make_optimizer keeps

    def __init__(self, cfgs: Sequence[TrialConfig], flat: torch.Tensor):
        kinds = {cfg.optimizer for cfg in cfgs}
        if len(kinds) != 1:
            raise ValueError(f"one optimiser type per population, got {sorted(kinds)}")
        self.kind = kinds.pop()
        column = lambda values: torch.tensor(values, dtype=torch.float64, device=flat.device)[:, None]  # noqa: E731
        self.lr = column([cfg.lr for cfg in cfgs])
        self.weight_decay = column([cfg.weight_decay for cfg in cfgs]).to(flat.dtype)
        self.momentum = column([cfg.momentum for cfg in cfgs]).to(flat.dtype)
        self.steps = 0
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.any_decay = bool((self.weight_decay != 0).any())

    def retain(self, keep: torch.Tensor) -> None:
        for name in ("lr", "weight_decay", "momentum", "exp_avg", "exp_avg_sq"):
            setattr(self, name, getattr(self, name)[keep])

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        self.steps += 1
        if self.any_decay:  # grad.add(param, alpha=weight_decay), per member
            grad = grad + self.weight_decay * param
        if self.kind == "sgd":
            self._sgd(param, grad)
        else:
            self._adam(param, grad)

    def _adam(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        # torch.optim.Adam's single-tensor step, op for op; the step size is a per-member column.
        beta1, beta2 = self.BETAS
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.steps
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        step_size = (self.lr / bias_correction1).to(param.dtype)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.EPS)
        param.addcdiv_(self.exp_avg * -step_size, denom)

    def _sgd(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        # torch.optim.SGD with momentum, no dampening: the buffer starts as the first gradient.
        if self.steps == 1:
            self.exp_avg.copy_(grad)
        else:
            self.exp_avg.mul_(self.momentum).add_(grad)
        param.sub_(self.exp_avg * self.lr.to(param.dtype))


@dataclass
class StageResult:
    wall_s: float
    failures: dict[int, tuple[int, float]]  # member position -> (epoch, first non-finite loss)


def train_population(pop: Population, data: Data, seeds: Sequence[int], *, epochs: int, batch_size: int,
                     desc: str = "fine-tune", progress: bool = False) -> StageResult:
    """`training.train` for every member at once: member k draws its batches (and flips) from
    its own generator seeded `seeds[k]`, as its single run would. A member whose loss goes
    non-finite is dropped at the end of that epoch (its single run would have stopped there
    with TrainingDiverged); the others go on. On return `pop` holds the surviving members, in their original order."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    device = data.train_x.device
    n = len(data.train_y)
    alive = list(range(pop.size))  # original positions of the members still in `pop`
    orders = [torch.Generator().manual_seed(seed) for seed in seeds]
    failures: dict[int, tuple[int, float]] = {}
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=not progress or None)
    for epoch in bar:
        plans = [epoch_batches(n, batch_size, orders[k], data.flip) for k in alive]
        idx = torch.stack([torch.cat([i for i, _ in plan]) for plan in plans]).to(device)
        flips = (torch.stack([torch.cat([f for _, f in plan]) for plan in plans]).to(device)
                 if data.flip else None)
        losses = []
        for lo in range(0, n, batch_size):
            batch = idx[:, lo:lo + batch_size]
            x, y = data.train_x[batch], data.train_y[batch]
            if flips is not None:
                x = torch.where(flips[:, lo:lo + batch_size, None, None, None], x.flip(-1), x)
            losses.append(pop.step(x, y))
        bad = ~torch.isfinite(torch.stack(losses)).all(0)
        if bad.any():
            for pos in bad.nonzero().flatten().tolist():
                first = next(loss[pos].item() for loss in losses if not torch.isfinite(loss[pos]))
                failures[alive[pos]] = (epoch + 1, first)
            keep = (~bad).nonzero().flatten()
            pop.retain(keep)
            alive = [alive[i] for i in keep.tolist()]
        bar.set_postfix(members=len(alive))
        if not alive:
            break
    bar.close()
    return StageResult(time.perf_counter() - start, failures)
