"""Binary masks over a model's weights and biases: what has been pruned, held exactly at 0.

A masked entry is 0 from the moment it is pruned (`apply`) and takes no part in learning:
`mask_grads` zeroes its gradient before every optimiser step, and each training stage starts
a fresh optimiser, so no momentum or Adam moment can move it and weight decay pulls on a 0.
"""

from __future__ import annotations

import torch
from torch import nn


class Masks:
    """One bool tensor per prunable parameter ('fc1.weight', 'conv2.bias'); True = kept."""

    def __init__(self, model: nn.Module):
        self.tensors: dict[str, torch.Tensor] = {
            name: torch.ones_like(param, dtype=torch.bool)
            for name, param in model.named_parameters()
            if isinstance(model.get_submodule(name.rsplit(".", 1)[0]), (nn.Linear, nn.Conv2d))
        }

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def prune(self, name: str, where: torch.Tensor) -> None:
        """Mark entries of parameter `name` as pruned (`where` True = prune)."""
        self.tensors[name] &= ~where.to(self.tensors[name].device)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, mask in self.tensors.items():
            params[name].mul_(mask)

    def mask_grads(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, mask in self.tensors.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(mask)

    def to(self, device: torch.device | str) -> Masks:
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        return self

    def clone(self) -> Masks:
        copy = object.__new__(Masks)
        copy.tensors = {k: v.clone() for k, v in self.tensors.items()}
        return copy

    def kept(self, name: str) -> int:
        return int(self.tensors[name].sum())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.tensors.items()}
