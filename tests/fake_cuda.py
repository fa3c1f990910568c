"""A CUDA device that runs real numbers on the CPU, for testing device handling without a GPU.

`fake_cuda()` makes "cuda" tensors that hold a CPU tensor and run every op on it, so a whole
trial (data-dependent control flow included: `.item()`, `bool(isfinite)`, `nonzero`) runs as
on a GPU, while mixing devices fails the way real CUDA fails:

    with fake_cuda() as gpu:
        x = torch.zeros(3, device="cuda")   # FakeCudaTensor, x.device == cuda:0
        x + torch.ones(3)                    # RuntimeError: Expected all tensors to be on the same device...
        gpu.syncs                            # host syncs so far (item, .cpu(), nonzero, ...)

Device rules, from ATen (native_functions.yaml, TensorIterator.cpp, TensorAdvancedIndexing.cpp):
- element-wise (TensorIterator) ops accept a 0-dim CPU tensor as an *input* beside CUDA ones;
  never as the output of an in-place op. We take the `pointwise` tag as "TensorIterator".
- other ops run a codegen check: every tensor on one device, 0-dim CPU included.
- `t[idx]` (aten.index): the indices may be on the CPU or on t's device, so CUDA t with CPU
  indices works, CPU t with CUDA indices does not. `t[idx] = v` (index_put_): indices may be
  anywhere (they are moved to t's device); v on t's device or 0-dim.
- `masked_fill(mask, value)`: mask on self's device; a 0-dim value may be on the CPU.
- foreach ops fall back to per-tensor element-wise ops across devices: checked per position.
- copies (`copy_`, `.to`) cross devices; `.numpy()` of a CUDA tensor raises.

Why the wrapper's C++ device is the CPU and only Python sees "cuda": autograd records each
tensor's device stream (InputMetadata -> getCurrentCUDAStream), which aborts the process on a
machine without a GPU driver. So `_make_wrapper_subclass` gets device=cpu and the `device`
property says cuda:0, as FakeTensor does. Everything in Python (our code, nn, optim) sees
cuda; the C++ autograd engine and TensorIterator only ever see the CPU elements.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
aten = torch.ops.aten

FREE_BYTES, TOTAL_BYTES = 12 * 2**30, 16 * 2**30  # what torch.cuda.mem_get_info reports
NAME, DRIVER, CUDA_VERSION, CUDNN_VERSION = "Fake GPU", "13.0 (580.65.06)", "13.0", 91002


@dataclass
class FakeGpu:
    """What the fake device saw while it was on."""

    syncs: Counter = field(default_factory=Counter)  # host syncs by kind: item, to_cpu, nonzero, ...
    host_to_device: int = 0  # copies of non-scalar CPU tensors onto the device
    memory_fraction: float | None = None  # what torch.cuda.set_per_process_memory_fraction was last given

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())


_state: FakeGpu | None = None


class _Event:
    """torch.cuda.Event on the fake device, which runs each op when it is called: the host clock
    at `record()` is when the work queued before it finished. As on a GPU, `elapsed_time` needs
    both events timed, recorded and the later one synchronised."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.enable_timing, self.at, self.done = enable_timing, None, False

    def record(self, stream=None) -> None:
        self.at, self.done = time.perf_counter(), False

    def synchronize(self) -> None:
        _sync("event")
        self.done = True

    def elapsed_time(self, end: _Event) -> float:
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self.at is None or end.at is None or not end.done:
            raise RuntimeError("CUDA error: device not ready")
        return (end.at - self.at) * 1e3


def _sync(kind: str) -> None:
    if _state is not None:
        _state.syncs[kind] += 1


def _upload(t: torch.Tensor) -> None:
    if _state is not None and t.dim() > 0:
        _state.host_to_device += 1


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


class FakeCudaTensor(torch.Tensor):
    elem: torch.Tensor
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, elem: torch.Tensor, requires_grad: bool = False) -> FakeCudaTensor:
        if isinstance(elem, FakeCudaTensor) or elem.device.type != "cpu":
            raise TypeError(f"FakeCudaTensor wraps a plain CPU tensor, got {type(elem).__name__} on {elem.device}")
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=CPU, requires_grad=requires_grad)
        r.elem = elem
        return r

    # What Python sees. C++ sees the CPU (see the module docstring).
    @property
    def device(self) -> torch.device:
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    def get_device(self) -> int:
        return 0

    # A traceable wrapper subclass: nn.Module.to() then swaps its parameters for ours
    # (swap_tensors) instead of assigning `.data`, which would keep a CPU parameter.
    def __tensor_flatten__(self):
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return FakeCudaTensor(inner_tensors["elem"])

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"FakeCudaTensor({self.elem!r}, device='cuda:0')"

    def numpy(self, *, force: bool = False):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")

    def tolist(self):
        _sync("tolist")
        return self.elem.tolist()

    def cpu(self, memory_format=torch.preserve_format) -> torch.Tensor:
        return self.to(CPU, memory_format=memory_format)

    def cuda(self, device=None, non_blocking: bool = False, memory_format=torch.preserve_format) -> torch.Tensor:
        return self.to(CUDA, non_blocking=non_blocking, memory_format=memory_format)

    def to(self, *args, **kwargs) -> torch.Tensor:
        # The C++ `to` compares against the C++ device (the CPU): it would take .to("cpu") for a
        # no-op and .to("cuda") for a copy. Decide here as real CUDA does.
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        copy = kwargs.get("copy", False)
        same_device = device is None or _is_cuda(device)
        if same_device and (dtype is None or dtype == self.dtype) and not copy and (
                memory_format in (None, torch.preserve_format)):
            return self
        return aten._to_copy(self, dtype=dtype or self.dtype, device=CUDA if same_device else device,
                             non_blocking=non_blocking,
                             memory_format=memory_format if memory_format is not None else torch.preserve_format)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _wrap(t):
    return FakeCudaTensor(t) if isinstance(t, torch.Tensor) and not isinstance(t, FakeCudaTensor) else t


def _unwrap(t):
    return t.elem if isinstance(t, FakeCudaTensor) else t


def _dev(t: torch.Tensor) -> torch.device:
    return CUDA if isinstance(t, FakeCudaTensor) else t.device


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _mismatch(first: torch.device, other: torch.device, func=None, arg: str | None = None) -> RuntimeError:
    message = (f"Expected all tensors to be on the same device, but found at least two devices, "
               f"{first} and {other}!")
    if arg is not None:  # the codegen check names the argument, as ATen's does
        message += f" (when checking argument for argument {arg} in method wrapper_CUDA__{func._schema.name.split('::')[-1]})"
    return RuntimeError(message)


def _check_same(func, named: list[tuple[str, torch.Tensor]]) -> torch.device | None:
    """The codegen check: every tensor argument on one device."""
    common = None
    for name, t in named:
        if common is None:
            common = _dev(t)
        elif _dev(t) != common:
            raise _mismatch(common, _dev(t), func, name)
    return common


def _check_iterator(outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> torch.device | None:
    """TensorIterator's check: 0-dim CPU inputs ride along with any device."""
    common = None
    for t in outputs + [t for t in inputs if not (t.dim() == 0 and _dev(t).type == "cpu")]:
        if common is None:
            common = _dev(t)
        elif _dev(t) != common:
            raise _mismatch(common, _dev(t))
    if common is None:
        common = _dev(inputs[0]) if inputs else None
    return common


def _named_tensors(func, args, kwargs) -> list[tuple[str, torch.Tensor]]:
    names = [a.name for a in func._schema.arguments]
    pairs = list(zip(names, args)) + list(kwargs.items())
    return [(name, t) for name, value in pairs for t in _tensors(value)]


def _mutated(func, args, kwargs) -> list[torch.Tensor]:
    out = []
    for i, a in enumerate(func._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            value = args[i] if i < len(args) else kwargs.get(a.name)
            out += _tensors(value)
    return out


def _check_devices(func, args, kwargs) -> None:
    tensors = _tensors((args, kwargs))
    if not any(isinstance(t, FakeCudaTensor) for t in tensors):
        return
    if func in (aten.copy_.default, aten._to_copy.default, aten._copy_from.default, aten._foreach_copy_.default,
                aten.lift_fresh.default, aten.detach.default, aten.alias.default):
        return
    if func is aten.index.Tensor:
        self, indices = args[0], [t for t in args[1] if t is not None]
        if not isinstance(self, FakeCudaTensor) and any(isinstance(t, FakeCudaTensor) for t in indices):
            raise RuntimeError(f"indices should be either on cpu or on the same device as the indexed tensor ({self.device})")
        return
    if func in (aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default,
                aten._unsafe_index_put.default):
        self, values = args[0], args[2]
        if _dev(values) != _dev(self) and values.dim() != 0:
            raise _mismatch(_dev(self), _dev(values))
        return
    if func in (aten.masked_fill_.Tensor, aten.masked_fill.Tensor):
        self, mask, value = args[:3]
        if _dev(mask) != _dev(self):
            raise RuntimeError(f"expected self and mask to be on the same device, but got mask on {_dev(mask)} "
                               f"and self on {_dev(self)}")
        if _dev(value) != _dev(self) and value.dim() != 0:
            raise _mismatch(_dev(self), _dev(value))
        return
    name = func._schema.name
    if name.startswith("aten::_foreach_"):
        lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
        singles = [a for a in args if isinstance(a, torch.Tensor)]
        mutated = _mutated(func, args, kwargs)
        for position in zip(*lists):
            outputs = [t for t in position if any(t is m for m in mutated)]
            _check_iterator(outputs, [t for t in position if not any(t is m for m in outputs)] + singles)
        return
    if torch.Tag.pointwise in func.tags or torch.Tag.reduction in func.tags:
        mutated = _mutated(func, args, kwargs)
        _check_iterator(mutated, [t for t in tensors if not any(t is m for m in mutated)])
        return
    _check_same(func, _named_tensors(func, args, kwargs))


# Ops whose result has a data-dependent size, or whose value the host reads: a CUDA device
# must finish its queue before the host can go on.
_SYNCING = {aten.nonzero.default: "nonzero", aten.masked_select.default: "nonzero",
            aten.equal.default: "item", aten.is_nonzero.default: "item"}


def _run(func, args, kwargs):
    _check_devices(func, args, kwargs)
    has_fake = any(isinstance(t, FakeCudaTensor) for t in _tensors((args, kwargs)))
    if func is aten._local_scalar_dense.default:
        _sync("item")
        return func(args[0].elem)
    if func in _SYNCING and has_fake:
        _sync(_SYNCING[func])
    if func is aten.index.Tensor and isinstance(args[0], FakeCudaTensor):
        for index in args[1]:
            if index is not None and not isinstance(index, FakeCudaTensor):
                _upload(index)
            if index is not None and index.dtype == torch.bool:
                _sync("nonzero")  # a boolean mask's result size is its number of True entries
    if func in (aten.index_put_.default, aten._index_put_impl_.default) and isinstance(args[0], FakeCudaTensor):
        for index in args[1]:
            if index is not None and not isinstance(index, FakeCudaTensor):
                _upload(index)

    if func is aten._to_copy.default or "device" in kwargs:
        # A copy or a factory: the result lives where the `device` argument says.
        target = kwargs.get("device")
        if target is None:
            target = _dev(args[0]) if args and isinstance(args[0], torch.Tensor) else CPU
        to_cuda = _is_cuda(target)
        if func is aten._to_copy.default:
            src = args[0]
            if to_cuda and not isinstance(src, FakeCudaTensor):
                _upload(src)
            if not to_cuda and isinstance(src, FakeCudaTensor):
                _sync("to_cpu")
        kwargs = {**kwargs, "device": CPU}
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        return tree_map(_wrap, out) if to_cuda else out

    if func is aten.copy_.default:
        dst, src = args[0], args[1]
        if isinstance(src, FakeCudaTensor) and not isinstance(dst, FakeCudaTensor):
            _sync("to_cpu")
        if isinstance(dst, FakeCudaTensor) and not isinstance(src, FakeCudaTensor):
            _upload(src)
        _unwrap(dst).copy_(_unwrap(src), *args[2:], **kwargs)
        return dst

    out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
    if not has_fake:
        return out
    mutated = _mutated(func, args, kwargs)
    for t in mutated:
        if isinstance(t, FakeCudaTensor) and (t.elem.shape != t.shape or t.elem.stride() != t.stride()):
            raise NotImplementedError(f"fake_cuda: {func} changes a tensor's shape in place; not supported")
    if mutated and func._schema.returns:
        # An in-place or out= op returns the very tensors it wrote into.
        flat = tree_flatten(out)[0]
        if len(flat) == len(mutated):
            return mutated[0] if len(mutated) == 1 and isinstance(out, torch.Tensor) else type(out)(mutated)
    return tree_map(_wrap, out)


class _FactoryMode(TorchDispatchMode):
    """Sends ops that name a CUDA device but hold no fake tensor (torch.zeros(..., device=
    "cuda"), cpu_tensor.to("cuda")) to the fake device; everything else passes through."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_cuda(kwargs.get("device")) or any(isinstance(t, FakeCudaTensor) for t in _tensors((args, kwargs))):
            return _run(func, args, kwargs)
        return func(*args, **kwargs)


class _MoveMode(TorchFunctionMode):
    """Moves CPU tensors to the fake device in Python. The C++ bindings of Tensor.to /
    .cuda() and torch.tensor(..., device="cuda") set up a real CUDA device guard before any
    dispatch, which fails without a GPU driver."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.to, torch.Tensor.cuda) and not isinstance(args[0], FakeCudaTensor):
            if func is torch.Tensor.cuda:
                device, dtype, memory_format = CUDA, None, kwargs.get("memory_format", torch.preserve_format)
            else:
                device, dtype, _, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
            if _is_cuda(device):
                return aten._to_copy(args[0], dtype=dtype or args[0].dtype, device=CUDA,
                                     memory_format=memory_format or torch.preserve_format)
        if func in (torch.tensor, torch.as_tensor) and _is_cuda(kwargs.get("device")):
            return aten._to_copy(func(*args, **{**kwargs, "device": CPU}), device=CUDA)
        return func(*args, **kwargs)


_PROPERTIES = mock.Mock(name=NAME, total_memory=TOTAL_BYTES, major=8, minor=0, multi_processor_count=108)
_PROPERTIES.name = NAME  # Mock(name=...) names the mock itself


def _set_memory_fraction(fraction: float, device=None) -> None:
    if not isinstance(fraction, float) or not 0 <= fraction <= 1:  # what torch checks
        raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
    if _state is not None:
        _state.memory_fraction = fraction


def _restore_cuda_as_cpu(storage, location: str):
    # torch.load(map_location="cuda") would allocate real CUDA memory; the CPU storage loads
    # into the fake device's parameters by copy_, as a real CUDA storage would.
    return storage if location.startswith("cuda") else None


@contextlib.contextmanager
def fake_cuda() -> Iterator[FakeGpu]:
    """Run the block with a fake CUDA device 0; yields what it saw (host syncs, uploads)."""
    with _process_patches() as state, _thread_modes():
        yield state


@contextlib.contextmanager
def _process_patches() -> Iterator[FakeGpu]:
    """What every thread of the process sees: torch.cuda's answers, CUDA storages loading."""
    global _state
    if _state is not None:
        raise RuntimeError("fake_cuda() is already on")
    state = FakeGpu()
    registry = torch.serialization._package_registry
    entry = (-1000, lambda storage: None, _restore_cuda_as_cpu)
    with contextlib.ExitStack() as stack:
        for name, value in [("is_available", lambda: True), ("device_count", lambda: 1),
                            ("mem_get_info", lambda device=None: (FREE_BYTES, TOTAL_BYTES)),
                            ("empty_cache", lambda: None), ("synchronize", lambda device=None: None),
                            ("get_device_name", lambda device=None: NAME), ("current_device", lambda: 0),
                            ("get_device_properties", lambda device=None: _PROPERTIES),
                            ("set_per_process_memory_fraction", _set_memory_fraction), ("Event", _Event),
                            ("_lazy_init", lambda: None)]:
            stack.enter_context(mock.patch.object(torch.cuda, name, value))
        # The software stack a CUDA build reports (a CPU-only build says None).
        stack.enter_context(mock.patch.object(torch.version, "cuda", CUDA_VERSION))
        stack.enter_context(mock.patch.object(torch.backends.cudnn, "version", lambda: CUDNN_VERSION))
        from prunerlib import records  # the driver library answers records, not torch
        stack.enter_context(mock.patch.object(records, "cuda_driver", lambda: DRIVER))
        # Optimisers ask the accelerator's stream whether a CUDA graph is being captured.
        stream = mock.Mock(is_capturing=lambda: False)
        stack.enter_context(mock.patch.object(torch.accelerator, "current_stream", lambda device=None: stream))
        registry.insert(0, entry)
        stack.callback(registry.remove, entry)
        _state = state
        try:
            yield state
        finally:
            _state = None


@contextlib.contextmanager
def _thread_modes() -> Iterator[None]:
    """What is per thread in torch: dispatch modes and autograd's threading switch."""
    with contextlib.ExitStack() as stack:
        # Autograd's worker threads exist per real device; run backward on the calling thread.
        stack.enter_context(torch.autograd.set_multithreading_enabled(False))
        stack.enter_context(_FactoryMode())
        stack.enter_context(_MoveMode())
        yield


_installed: contextlib.ExitStack | None = None


def install_in_ray_worker() -> None:
    """For Ray's `worker_process_setup_hook`: every worker process of the job sees one fake GPU
    (torch.cuda answers as on a GPU node, so a zero-CPU probe task finds one), and each Tune
    trial of the sweep runner runs on it. A trial runs in a thread of its own (Tune's function
    runner), and torch's dispatch modes are per thread, so they are switched on around
    `prunerlib.sweep.trainable.pack_trial`, which the worker looks up by name when it unpickles
    the trainable (after this hook has run)."""
    import functools

    import prunerlib.sweep.trainable as trainable

    global _installed
    if _installed is not None:
        return
    _installed = contextlib.ExitStack()
    _installed.enter_context(_process_patches())
    trial = trainable.pack_trial

    @functools.wraps(trial)
    def pack_trial(*args, **kwargs):
        with _thread_modes():
            return trial(*args, **kwargs)

    trainable.pack_trial = pack_trial
