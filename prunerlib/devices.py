"""Which torch device a trial runs on, and why a CUDA device cannot be used."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import torch

from prunerlib.errors import ConfigError, EnvironmentFault


def resolve_device(name: str, assigned_gpus: Sequence[Any] | None = None) -> torch.device:
    """The torch device a trial's `device` setting means here.

    Run by hand (`assigned_gpus` None), `auto` is the GPU when torch sees one, and a CUDA
    device torch cannot use is a setting to fix (ConfigError). Under a scheduler that hands out
    GPUs (a Tune trial passes `ray.get_gpu_ids()`), the GPUs are the scheduler's to give:
    `auto` is the assigned GPU, or the CPU when none was assigned (torch there may still see
    the node's GPUs, which belong to other trials), and an assigned GPU that torch cannot use
    is the machine's fault: an EnvironmentFault naming the host and torch's reason, retried
    elsewhere rather than run on one CPU thread while holding the GPU."""
    try:
        device = torch.device("cuda" if name == "auto" else name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if assigned_gpus is not None and (device.type == "cpu" or not assigned_gpus):
        if device.type == "cuda" and name != "auto":  # the spec check refuses this before a sweep starts
            raise ConfigError(f"device: {name} asked for, but the trial was given no GPU (resources.gpu)")
        return torch.device("cpu")
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        if assigned_gpus is None:
            if name == "auto":
                return torch.device("cpu")
            raise ConfigError(f"device: {name} asked for, but torch here cannot use a CUDA GPU "
                              f"({cuda_unusable()}; use auto or cpu)")
        raise EnvironmentFault(f"host {platform.node()}: GPU {','.join(map(str, assigned_gpus))} assigned, but torch "
                               f"cannot use it: {cuda_unusable()}")
    visible = torch.cuda.device_count()
    index = device.index or 0
    if index >= visible:
        problem = f"device: {name}, but torch here sees {visible} CUDA device(s), cuda:0 to cuda:{visible - 1}"
        if assigned_gpus is None:
            raise ConfigError(problem)
        raise EnvironmentFault(f"host {platform.node()}: {problem} (the trial sees only the GPUs it was assigned)")
    return device


def cuda_unusable() -> str:
    """Why torch.cuda.is_available() is False, in torch's words (a CPU-only build, a driver too
    old for the wheel's CUDA, no device)."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001  its message is the reason
        return " ".join(str(exc).split())[:200] or type(exc).__name__
    return "torch.cuda.is_available() is False"
