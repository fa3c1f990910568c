"""Measured inference latency: what a pruned network's FLOP count promises, timed.

`theoretical_speedup` counts multiply-adds; a dense kernel spends the same time on a zero as on
any weight, and a small network at batch 1 is mostly call overhead. So each final row also
carries the median wall time of a forward pass of the dense (full-width, masked) network and
of the compacted one, at the trial's `latency_batch` and at batch 1, on the trial's device.

Method: inference mode; warm-up; then the median of as many timed passes as fill `budget_s`
(at least `_MIN_REPS`, at most `_MAX_REPS`). On the CPU with one thread (the thread count is a column): a sweep
runs one trial per core, and a one-thread figure is what compares across machines and core
counts. On CUDA each pass is timed with CUDA events, synchronised.

A dense kernel's time depends on the tensors' shapes, not their values, so a process measures
each (shapes, batch, device, threads) once and reuses the figure (`_MEASURED`): a network
whose pruning removed no unit or filter has the dense network's latency by construction, and
the paper's 210-trial Waveform grid measures a few dozen distinct shapes, not 840 networks.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

_MIN_REPS = 5
_WARMUP = 3
# A sub-millisecond network's median is as stable after this many passes as after the whole
# budget's thousands (benchmarks/README.md); a network of a millisecond or more fills its budget
# first. Without the cap, timing was a third of a Waveform sweep's wall time.
_MAX_REPS = 200
_MEASURED: dict[tuple[Any, ...], float] = {}


def latency_columns(model: nn.Module, small: nn.Module, input_shape: tuple[int, ...], batch: int,
                    device: torch.device) -> dict[str, Any]:
    """The latency columns of a final row: the dense `model` and `small`, its `surgery.compact`
    network, at `batch` and at 1."""
    threads = 1 if device.type == "cpu" else None
    row: dict[str, Any] = {"latency_batch": batch, "latency_threads": threads}
    for size, suffix in ((batch, ""), (1, "_b1")):
        ms_dense = median_ms(model, input_shape, size, device)
        ms_pruned = median_ms(small, input_shape, size, device)
        row |= {f"latency_ms_dense{suffix}": ms_dense, f"latency_ms_pruned{suffix}": ms_pruned,
                f"measured_speedup{suffix}": ms_dense / ms_pruned}
    return row


def median_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int, device: torch.device,
              budget_s: float = 0.2) -> float:
    """Median milliseconds of one forward pass of `batch` examples (see the module's method)."""
    device = torch.device(device)
    key = (type(model).__name__, tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
           tuple(input_shape), batch, str(device))
    if key not in _MEASURED:
        _MEASURED[key] = _measure(model, input_shape, batch, device, budget_s)
    return _MEASURED[key]


@torch.inference_mode()
def _measure(model: nn.Module, input_shape: tuple[int, ...], batch: int, device: torch.device,
             budget_s: float) -> float:
    was_training = model.training
    model.eval()
    threads = torch.get_num_threads()
    # From a generator of its own: timing must not spend the global one trials draw from.
    x = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    try:
        if device.type == "cpu":
            torch.set_num_threads(1)
        for _ in range(_WARMUP):
            model(x)
        times: list[float] = []
        spent = 0.0
        while len(times) < _MIN_REPS or (spent < budget_s and len(times) < _MAX_REPS):
            seconds = _cuda_pass(model, x) if device.type == "cuda" else _cpu_pass(model, x)
            times.append(seconds)
            spent += seconds
        return statistics.median(times) * 1e3
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


def _cpu_pass(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def _cuda_pass(model: nn.Module, x: torch.Tensor) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    model(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3
