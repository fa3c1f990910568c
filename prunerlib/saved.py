"""Pruned networks on disk: a trial's final model, compacted, with what rebuilds and feeds it.

A masked network saves nothing: its zeros are as large as the weights they replace, and
loading its state into a smaller module fails with "size mismatch". So a trial saves the
physically smaller network `surgery.compact` builds (dense tensors, no masks) with its
architecture's widths, the input shape, the class names, the preprocessing the trial applied
to raw inputs, and the configuration that made it. `load_pruned` rebuilds it with plain
`torch.load(weights_only=True)`: the file holds tensors, numbers, strings, lists and dicts
only, never pickled code.

    model = prunerlib.load_pruned("runs/paper_cnn/models/<trial_id>.pt")
    logits = model(preprocess(raw, model.prunerlib["preprocessing"]))

The file's `format` and `version` are checked before anything else is read: a file of another
format version is refused with one line, not a half-built module.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.files import atomic_write
from prunerlib.masks import Masks
from prunerlib.models import CNN, FFN
from prunerlib.surgery import compact

# What a trial keeps: its final model, every cycle's (<trial_id>.cycle<k>.pt besides), or none.
SaveModels = Literal["final", "all_cycles", "none"]

FORMAT = "prunerlib.pruned"
# Bump when what a file holds, or how it rebuilds, changes: other versions are refused.
VERSION = 1


def save_pruned(path: str | Path, model: nn.Module, masks: Masks, cfg: TrialConfig, *,
                input_shape: tuple[int, ...], class_names: tuple[str, ...], preprocessing: dict[str, Any],
                about: dict[str, Any]) -> int:
    """Write the compacted `model` to `path` (atomically) and return its size in bytes.
    `about`: what the trial says of this model (trial_id, cycle, accuracies), kept beside it."""
    return save_compacted(path, compact(model, masks), cfg, input_shape=input_shape, class_names=class_names,
                          preprocessing=preprocessing, about=about)


def save_compacted(path: str | Path, small: nn.Module, cfg: TrialConfig, *, input_shape: tuple[int, ...],
                   class_names: tuple[str, ...], preprocessing: dict[str, Any], about: dict[str, Any]) -> int:
    """`save_pruned` of a network `surgery.compact` built already (a trial times it too)."""
    payload = {
        "format": FORMAT, "version": VERSION,
        "architecture": architecture(small, cfg, input_shape),
        "input_shape": list(input_shape),
        "class_names": list(class_names),
        "preprocessing": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in preprocessing.items()},
        "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
        "about": dict(about),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in small.state_dict().items()},
    }
    buffer = io.BytesIO()  # serialised first, so a failing save leaves no half-written file
    torch.save(payload, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return buffer.tell()


def architecture(small: nn.Module, cfg: TrialConfig, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The compacted network's widths: what `build` needs to make a module its state fits."""
    classes = small.fc2.out_features
    if isinstance(small, FFN):
        return {"model": "ffn", "in_features": int(input_shape[0]), "hidden": small.fc1.out_features,
                "classes": classes, "activation": cfg.activation}
    if isinstance(small, CNN):
        return {"model": "cnn", "channels": [small.conv1.out_channels, small.conv2.out_channels],
                "hidden": small.fc1.out_features, "classes": classes, "image_size": int(input_shape[-1]),
                "activation": cfg.activation}
    raise TypeError(f"cannot save a {type(small).__name__}: only prunerlib's FFN and CNN rebuild from widths")


def build(arch: dict[str, Any]) -> nn.Module:
    """An (untrained) module of the architecture `arch` describes."""
    # Initialisation is overwritten: the caller's RNG is not spent on it, and a layer pruned to
    # no units (a result like any other) is not worth torch's zero-element warning.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        if arch["model"] == "ffn":
            return FFN(arch["in_features"], arch["hidden"], arch["classes"], arch["activation"])
        return CNN(tuple(arch["channels"]), arch["hidden"], arch["classes"], arch["image_size"], arch["activation"])


def read(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The file's contents, checked: its format, its version, and every key `load_pruned` reads."""
    path = Path(path)
    try:
        raw = path.read_bytes()  # a failing disk raises here, as the fault it is
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such model file") from None
    try:
        payload = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  whatever torch's reader makes of bytes that are not a model file
        raise ConfigError(f"{path}: not a readable model file ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a prunerlib pruned-model file (a plain state_dict? load it with torch.load)")
    if payload.get("version") != VERSION:
        raise ConfigError(f"{path}: a pruned-model file of format version {payload.get('version')}; this prunerlib "
                          f"reads version {VERSION} (load it with the prunerlib that wrote it)")
    return payload


def load_pruned(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The saved pruned network, in eval mode: it computes what the trial's masked network
    computed. Everything else the file holds (configuration, class names, preprocessing, the
    trial's accuracies) is the module's `prunerlib` dict."""
    payload = read(path, map_location)
    model = build(payload["architecture"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    model.prunerlib = {k: v for k, v in payload.items() if k != "state_dict"}
    return model


def preprocess(raw: torch.Tensor, preprocessing: dict[str, Any]) -> torch.Tensor:
    """Raw inputs as the network takes them: `(raw * scale - mean) / std` (for images: pixel
    values 0-255 as a float N×3×H×W tensor, already resized to the saved image size)."""
    return (raw.float() * preprocessing["scale"] - preprocessing["mean"]) / preprocessing["std"]


# --- export: the network without prunerlib ------------------------------------------------------
ExportFormat = Literal["torchscript", "exported"]
EXPORT_META = "prunerlib.json"  # the extra file in an export holding what feeds and reads the network


def export(model: nn.Module, fmt: ExportFormat, out: str | Path) -> int:
    """Write the loaded pruned `model` (from `load_pruned`) as TorchScript or a `torch.export`
    program to `out` (atomically), and return its size in bytes. Both run with torch alone;
    `prunerlib.json` inside says how to feed and read them:

        meta = {"prunerlib.json": ""}
        net = torch.jit.load(out, _extra_files=meta)                  # torchscript
        net = torch.export.load(out, extra_files=meta).module()       # exported
        p = json.loads(meta["prunerlib.json"])["preprocessing"]
        logits = net((raw * p["scale"] - torch.tensor(p["mean"])) / torch.tensor(p["std"]))
    """
    import json

    meta = json.dumps(export_metadata(model), indent=1)
    model = model.cpu().eval()  # exports run on the CPU; torch.jit.load / torch.export.load can move them
    if fmt == "torchscript":
        # torch.jit.script, not trace: nothing is recorded from one example input. TorchScript is
        # deprecated (torch warns on script and save) but still what C++ and mobile runtimes load.
        def write(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
                torch.jit.save(torch.jit.script(model), str(tmp), _extra_files={EXPORT_META: meta})
    elif fmt == "exported":
        example = torch.zeros((2, *model.prunerlib["input_shape"]))  # a batch of 1 would be specialised to
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))

        def write(tmp: Path) -> None:
            buffer = io.BytesIO()  # a path not ending in .pt2 (the temporary's) makes torch warn
            torch.export.save(program, buffer, extra_files={EXPORT_META: meta})
            tmp.write_bytes(buffer.getvalue())
    else:
        raise ConfigError(f"--format: {fmt!r} is not an export format (torchscript | exported)")
    atomic_write(out, write)
    return Path(out).stat().st_size


def export_metadata(model: nn.Module) -> dict[str, Any]:
    """What a user of an exported network needs without prunerlib: JSON-ready (tensors as nested
    lists of their own shape, so `torch.tensor(mean)` broadcasts as the saved tensor did)."""
    info = model.prunerlib
    plain = lambda v: v.tolist() if torch.is_tensor(v) else v  # noqa: E731
    return {
        "input_shape": info["input_shape"], "class_names": info["class_names"],
        "preprocessing": {"formula": "(raw * scale - mean) / std",
                          **{k: plain(v) for k, v in info["preprocessing"].items()}},
        "architecture": info["architecture"], "config_hash": info["config_hash"],
        "about": info["about"], "config": info["config"],
    }
