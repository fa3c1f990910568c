"""Size and cost of a (pruned) model: parameters, FLOPs, removed fractions (SPEC §6)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import conv_flop_count, mm_flop

from prunerlib.errors import ConfigError
from prunerlib.masks import Masks
from prunerlib.surgery import live_filters, live_units


# count_flops by architecture: a pack's members share one dense network, and a traced forward
# per member and cycle was a visible share of a pack's bookkeeping (benchmarks/README.md).
_COUNTED: dict[tuple, dict[str, int]] = {}


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """FLOPs of one forward pass of one example, per linear and conv layer, by the formulas of
    PyTorch's counter (torch.utils.flop_counter; tests/test_metrics.py holds them equal to
    FlopCounterMode's counts). Not FlopCounterMode itself: its first use in a process imports
    torch._dynamo, about a second of every sweep worker's start (benchmarks/README.md), and
    these models compute nothing it would count outside their linear and conv layers."""
    param = next(model.parameters())
    key = (tuple(input_shape), param.dtype, param.device.type,
           tuple((name, type(m), tuple(tuple(p.shape) for p in m.parameters(recurse=False)))
                 for name, m in model.named_modules()))
    if key not in _COUNTED:
        counts: dict[str, int] = {}

        def count(name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):  # aten.addmm (or mm): input (1, in) times weight.T (in, out)
                counts[name] = mm_flop(tuple(inputs[0].shape), tuple(module.weight.T.shape))
            else:
                counts[name] = conv_flop_count(list(inputs[0].shape), list(module.weight.shape), list(out.shape))

        hooks = [m.register_forward_hook(lambda m, i, o, name=name: count(name, m, i, o))
                 for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        try:
            with torch.no_grad():
                model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
        finally:
            for hook in hooks:
                hook.remove()
        _COUNTED[key] = counts
    return dict(_COUNTED[key])


def pruned_flops(model: nn.Module, masks: Masks, input_shape: tuple[int, ...]) -> int:
    """FLOPs of the physically smaller network (surgery.compact's), each layer's count scaled by
    the share of its weights still non-zero: every weight of a linear or conv layer takes part
    in the same number of multiply-adds, so an unstructured mask saves that share. Counted on
    the dense network: removing a unit or filter masks its weights and those that read it
    (surgery._mask), so each dense layer holds exactly its smaller layer's non-zero weights,
    in the same multiply-adds each, and no smaller copy needs building."""
    total = 0.0
    for name, flops in count_flops(model, input_shape).items():
        weight = model.get_submodule(name).weight
        total += flops * float(((weight != 0) & masks[f"{name}.weight"]).sum()) / weight.numel()
    return int(round(total))


def weight_scope(model: nn.Module, scope: str | tuple[str, ...]) -> list[str]:
    """The weight matrices `threshold_layers` names: what threshold pruning masks, and what every
    pruner's `weights_removed_frac` counts. 'hidden' (into the hidden units), 'all_linear', or
    layer names."""
    if scope == "hidden":
        return [f"{layer.incoming}.weight" for layer in model.unit_layers]
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if scope == "all_linear":
        return [f"{name}.weight" for name in linear]
    names = (scope,) if isinstance(scope, str) else scope
    unknown = [n for n in names if n not in linear]
    if unknown:
        raise ConfigError(f"threshold_layers: {unknown[0]!r} is not a linear layer (choose from {', '.join(linear)})")
    return [f"{name}.weight" for name in names]


def removed_fractions(model: nn.Module, masks: Masks, scope: list[str]) -> dict[str, float | None]:
    """The removed-fraction columns; `weights_removed_frac` counts the weight matrices `scope`
    names (`weight_scope`), whatever the pruner."""
    units = sum(len(live_units(masks, layer)) for layer in model.unit_layers)
    unit_total = sum(masks[f"{layer.incoming}.bias"].numel() for layer in model.unit_layers)
    weights_total = sum(masks[name].numel() for name in scope)
    weights_kept = sum(masks.kept(name) for name in scope)
    filters_total = sum(masks[f"{layer.conv}.bias"].numel() for layer in model.filter_layers)
    filters = sum(len(live_filters(masks, layer)) for layer in model.filter_layers)
    return {
        "units_removed_frac": (unit_total - units) / unit_total,
        "weights_removed_frac": (weights_total - weights_kept) / weights_total,
        "filters_removed_frac": (filters_total - filters) / filters_total if filters_total else None,
        "filters_removed": ",".join(str(masks[f"{layer.conv}.bias"].numel() - len(live_filters(masks, layer)))
                                    for layer in model.filter_layers) or None,
    }


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) over every parameter of the model."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int((p != 0).sum()) for p in params)
