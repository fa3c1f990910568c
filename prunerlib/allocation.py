"""Sensitivity-guided filter allocation (`filters_pruned: auto`, issue 15.4).

A cycle removes a global number of conv filters; this chooses how many come from each conv
layer. For each layer alone, its live filters are taken in the trial's ranking (lowest score
first) and removed k at a time, for every k that leaves one, and the network is evaluated as
it is, without fine-tuning: that layer's sensitivity curve. The split of the total is then the
one whose summed curves are lowest.

Choices the paper and SPEC leave open, made here:
- The curve is the mean cross-entropy on the VALIDATION split. The test split is never read
  (SPEC §5.5). Loss rather than accuracy: on a few hundred validation photos accuracy moves in
  steps of 1/n and lies flat over many k, so ties would decide the split; loss is smooth.
- Every k is scanned (no grid, no interpolation): one forward pass of the validation split per
  k, 47 passes for the paper CNN's 16 + 32 filters (the cost: benchmarks/README.md).
- Curves are treated as additive across layers: the loss increase of removing k1 from conv1
  and k2 from conv2 together is taken as the sum of the two increases measured alone. That
  ignores interactions (conv2's filters see conv1's output), and is what makes the split an
  exact search over per-layer curves rather than a search over every joint removal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from prunerlib.models import FilterLayer


@torch.no_grad()
def loss_curve(model: nn.Module, layer: FilterLayer, ranked: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               batch: int = 1024) -> torch.Tensor:
    """Validation loss after removing `ranked[:k]` of `layer`'s filters, for k = 0 .. len(ranked) − 1
    (float64). A removed filter's output channel is zeroed, which is what masking its weights and
    bias does: its ReLU, pooling and the next layer then see zeros."""
    conv = model.get_submodule(layer.conv)
    keep = torch.ones(conv.out_channels, device=x.device)
    handle = conv.register_forward_hook(lambda _m, _i, out: out * keep[None, :, None, None])
    was_training = model.training
    model.eval()
    losses = []
    try:
        for k in range(len(ranked)):
            if k:
                keep[ranked[k - 1]] = 0.0
            total = sum(F.cross_entropy(model(xb), yb, reduction="sum").double()
                        for xb, yb in zip(x.split(batch), y.split(batch)))
            losses.append(total / len(y))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.stack(losses).cpu()


def split(curves: Sequence[torch.Tensor], total: int) -> tuple[int, ...]:
    """Per layer, how many to remove: the k_l with sum k_l = `total` (or as many as the layers
    hold, each keeping one) minimising sum curve_l[k_l]. Exact, by dynamic programming over the
    layers; on equal sums the earlier layers keep more."""
    total = min(total, sum(len(c) - 1 for c in curves))
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}  # removed so far -> (cost, counts)
    for curve in curves:
        values = curve.tolist()
        reach: dict[int, tuple[float, tuple[int, ...]]] = {}
        for done, (cost, counts) in best.items():
            for k in range(min(len(values), total - done + 1)):
                candidate = (cost + values[k], (*counts, k))
                if done + k not in reach or candidate[0] < reach[done + k][0]:
                    reach[done + k] = candidate
        best = reach
    return best[total][1]


def allocate(model: nn.Module, rankings: Sequence[tuple[FilterLayer, torch.Tensor]],
             validation: tuple[torch.Tensor, torch.Tensor], total: int) -> tuple[int, ...]:
    """How many of each layer's ranked live filters to remove so that `total` go in all, the
    summed validation-loss increase least (see the module's note on additivity)."""
    x, y = validation
    return split([loss_curve(model, layer, ranked, x, y) for layer, ranked in rankings], total)
