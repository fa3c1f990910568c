"""Structural edits on a masked model: remove units, filters and weights; compact.

Pruners decide *what* to remove and return a `Removal`; this module is the only place that
edits weights and masks, so every pruner gets the same guarantee: a removed unit or filter
leaves the network computing exactly what a physically smaller one computes (`compact`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from prunerlib.masks import Masks
from prunerlib.models import FilterLayer, UnitLayer


@dataclass
class Removal:
    """What one pruning step removes. Indices refer to the full-width model."""

    units: dict[str, list[int]] = field(default_factory=dict)  # UnitLayer.incoming -> units
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # param -> bool, True = remove
    filters: dict[str, list[int]] = field(default_factory=dict)  # FilterLayer.conv -> filters
    merges: list[tuple[str, int, int]] = field(default_factory=list)  # (layer, removed, kept)
    constants: dict[str, dict[int, float]] = field(default_factory=dict)  # layer -> unit -> activation

    def extend(self, other: Removal) -> None:
        self.units.update(other.units)
        self.weights.update(other.weights)
        self.filters.update(other.filters)
        self.merges += other.merges
        self.constants.update(other.constants)

    def count(self) -> int:
        return (sum(len(u) for u in self.units.values()) + sum(int(w.sum()) for w in self.weights.values())
                + sum(len(f) for f in self.filters.values()))


def live_units(masks: Masks, layer: UnitLayer) -> torch.Tensor:
    """Indices of units not yet removed (a removed unit has its bias masked)."""
    return masks[f"{layer.incoming}.bias"].nonzero().flatten()


def live_filters(masks: Masks, layer: FilterLayer) -> torch.Tensor:
    return masks[f"{layer.conv}.bias"].nonzero().flatten()


@torch.no_grad()
def apply_removal(model: nn.Module, masks: Masks, removal: Removal) -> None:
    """Carry out `removal`, then remove any hidden unit that pruning left disconnected."""
    params = dict(model.named_parameters())
    for layer_name, removed, kept in removal.merges:
        layer = _unit_layer(model, layer_name)
        out_w = params[f"{layer.outgoing}.weight"]
        out_w[:, kept] += out_w[:, removed]
    for layer_name, constants in removal.constants.items():
        layer = _unit_layer(model, layer_name)
        for unit, value in constants.items():
            _fold_constant(params, layer, unit, value)
    _mask(model, masks, removal)
    masks.apply(model)
    _remove_disconnected_units(model, masks)


def masked(model: nn.Module, masks: Masks, removal: Removal) -> Masks:
    """The masks `removal` would leave (its weights, units and filters), the model untouched:
    what a random control needs to count what its method's step takes from each matrix."""
    after = masks.clone()
    _mask(model, after, removal)
    return after


def _mask(model: nn.Module, masks: Masks, removal: Removal) -> None:
    for name, where in removal.weights.items():
        masks.prune(name, where)
    for layer_name, units in removal.units.items():
        _remove_units(masks, _unit_layer(model, layer_name), units)
    for conv, filters in removal.filters.items():
        _remove_filters(masks, _filter_layer(model, conv), filters)


def _remove_units(masks: Masks, layer: UnitLayer, units: list[int]) -> None:
    idx = torch.as_tensor(units, dtype=torch.long)
    masks[f"{layer.incoming}.weight"][idx] = False
    masks[f"{layer.incoming}.bias"][idx] = False
    # A sigmoid unit with no input still outputs 0.5: only cutting its outgoing weights
    # removes it from what the network computes.
    masks[f"{layer.outgoing}.weight"][:, idx] = False


def _remove_filters(masks: Masks, layer: FilterLayer, filters: list[int]) -> None:
    idx = torch.as_tensor(filters, dtype=torch.long)
    masks[f"{layer.conv}.weight"][idx] = False
    masks[f"{layer.conv}.bias"][idx] = False
    consumer = masks[f"{layer.consumer}.weight"]
    if consumer.dim() == 4:
        consumer[:, idx] = False
    else:  # a linear consumer reads the flattened map channel by channel
        cols = (idx[:, None] * layer.per_channel + torch.arange(layer.per_channel)).flatten()
        consumer[:, cols] = False


def _fold_constant(params: dict[str, nn.Parameter], layer: UnitLayer, unit: int, value: float) -> None:
    """A unit that outputs `value` on every input is a bias term for the next layer."""
    params[f"{layer.outgoing}.bias"] += value * params[f"{layer.outgoing}.weight"][:, unit]


def _remove_disconnected_units(model: nn.Module, masks: Masks) -> None:
    """A live unit with every incoming weight pruned outputs act(bias), a constant: fold it
    into the next bias and remove it. One with every outgoing weight pruned adds nothing."""
    params = dict(model.named_parameters())
    for layer in model.unit_layers:
        live = live_units(masks, layer)
        no_input = ~masks[f"{layer.incoming}.weight"][live].flatten(1).any(1)
        no_output = ~masks[f"{layer.outgoing}.weight"][:, live].any(0)
        dead = live[no_input | no_output]
        if not len(dead):
            continue
        act = model.get_submodule(layer.activation)
        for unit in live[no_input & ~no_output].tolist():
            constant = float(act(params[f"{layer.incoming}.bias"][unit : unit + 1]))
            _fold_constant(params, layer, unit, constant)
        _remove_units(masks, layer, dead.tolist())
    masks.apply(model)


def _unit_layer(model: nn.Module, incoming: str) -> UnitLayer:
    return next(layer for layer in model.unit_layers if layer.incoming == incoming)


def _filter_layer(model: nn.Module, conv: str) -> FilterLayer:
    return next(layer for layer in model.filter_layers if layer.conv == conv)


@torch.no_grad()
def compact(model: nn.Module, masks: Masks) -> nn.Module:
    """The physically smaller network: removed units and filters are gone, not zeroed.
    Unstructured zeros inside the remaining matrices stay (they are not structure)."""
    keep_out, keep_in = kept_indices(model, masks)
    small = copy.deepcopy(model)
    for name in set(keep_out) | set(keep_in):
        old = model.get_submodule(name)
        weight = old.weight
        bias = old.bias
        if name in keep_out:
            weight, bias = weight[keep_out[name]], bias[keep_out[name]]
        if name in keep_in:
            weight = weight[:, keep_in[name]]
        # The copy's layer takes the kept slices as its parameters: no new layer to build and
        # initialise (which would spend the global RNG and allocate off the weights' device).
        layer = small.get_submodule(name)
        layer.weight, layer.bias = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())
        if isinstance(layer, nn.Conv2d):
            layer.out_channels, layer.in_channels = weight.shape[:2]
        else:
            layer.out_features, layer.in_features = weight.shape
    return small


def kept_indices(model: nn.Module, masks: Masks) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per module, the output rows / channels and the input columns / channels `compact`
    keeps, on the masks' device."""
    keep_out: dict[str, torch.Tensor] = {}  # module -> output rows/channels kept
    keep_in: dict[str, torch.Tensor] = {}  # module -> input columns/channels kept
    for layer in model.unit_layers:
        live = live_units(masks, layer)
        keep_out[layer.incoming] = live
        keep_in[layer.outgoing] = live
    for layer in model.filter_layers:
        live = live_filters(masks, layer)
        keep_out[layer.conv] = live
        if layer.per_channel == 1:
            keep_in[layer.consumer] = live
        else:
            channel = torch.arange(layer.per_channel, device=live.device)
            keep_in[layer.consumer] = (live[:, None] * layer.per_channel + channel).flatten()
    return keep_out, keep_in
