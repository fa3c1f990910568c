"""A whole FFN fine-tuning epoch of a population as one C call, member after member.

The population's batched torch step (`batched.Population.step`) pays, every step, ~25 op
dispatches and a pass over all members' parameters, moments and masks (several MB, more than
the L2 cache): at a few thousand parameters per member that costs more than the arithmetic.
Members never interact, so this kernel turns the loops round: for each member it runs every
step of the epoch, gather, forward, hand-written backward, gradient mask and Adam / SGD
update, with the member's weights, moments and activations (tens of kB) staying in L1/L2.
Hidden units a member has lost are left out of its arithmetic, exactly (`kept_units` in the C
program): a member that pruning halved fine-tunes in about half the time.

The C program is `ffn_kernel.c` beside this module; `epoch` is its whole calling interface.
It is compiled on first use with the machine's C compiler (once per machine: the shared library
is cached under $PRUNERLIB_CACHE by source, flags, compiler and CPU; build time and speed-up: see
benchmarks/README.md) and loaded with ctypes.
A cached library is loaded only if it matches the SHA-256 recorded when it was built, and only
from a cache folder no one else can write; otherwise it is rebuilt (see `load`). Without a
compiler, or if the build fails, `load()` returns None and the population trains with its
torch step instead (`batched.train_population(kernel=...)` says whether that may happen).
PRUNERLIB_FFN_KERNEL=0 switches the kernel off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from prunerlib.files import atomic_write, umask_mode

log = logging.getLogger("prunerlib.ffn_kernel")

ACTIVATIONS = {"sigmoid": 0, "tanh": 1, "relu": 2}
OPTIMIZERS = {"adam": 0, "sgd": 1}

# The C program, shipped beside this module as package data (see pyproject.toml).
SOURCE = Path(__file__).with_name("ffn_kernel.c")

_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]


def fits(fc1: torch.Tensor, fc2: torch.Tensor, *, state: Sequence[torch.Tensor], keep: Sequence[torch.Tensor | None],
         activation: str, table: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether `epoch` can run on these tensors (its arguments of the same names; `state`: every
    optimiser moment). The C code indexes with them unchecked: what it cannot take must never
    reach it."""
    tensors = [fc1, fc2, *state, table, *(m for m in keep if m is not None)]
    if activation not in ACTIVATIONS:
        return False
    if not (all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
            and labels.device.type == "cpu" and labels.dtype == torch.int64 and labels.is_contiguous()):
        return False
    return (table.shape == (len(labels), fc1.shape[2]) and len(labels) > 0
            and 0 <= int(labels.min()) and int(labels.max()) < fc2.shape[1])


def epoch(fc1: torch.Tensor, fc2: torch.Tensor, *, exp_avg: Sequence[torch.Tensor],
          exp_avg_sq: Sequence[torch.Tensor] | None, keep: Sequence[torch.Tensor | None],
          lr: Sequence[float], weight_decay: Sequence[float], momentum: Sequence[float], optimizer: str,
          activation: str, steps_done: int, table: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
          batch_size: int) -> torch.Tensor:
    """Train K FFN members one epoch in place, each through its own batches; returns the (K,
    steps) mean cross-entropy of every step, before its update. Raises RuntimeError if the
    library did not load (`load`), MemoryError if its scratch buffers do not fit.

    fc1, fc2: (K, H, I) and (K, C, H + 1) weights, each layer's bias as its last column (the
      `table` has a constant-1 last column to match).
    exp_avg, exp_avg_sq: Adam's first and second moments for (fc1, fc2), shaped like them;
      SGD: exp_avg is the momentum buffers and exp_avg_sq None. Updated in place.
    keep: 0/1 gradient masks for (fc1, fc2), None for a layer where every member keeps every entry.
    lr, weight_decay, momentum: each member's (momentum is read by SGD only).
    optimizer: "adam" or "sgd", as torch.optim.Adam / SGD (`training.make_optimizer`) step.
    activation: the hidden layer's, "sigmoid", "tanh" or "relu".
    steps_done: optimiser steps taken before this epoch in this stage (Adam's bias correction,
      SGD's first-step rule).
    table: (N, I) every training example; labels: (N,) their classes.
    order: (K, N) each member's example order; consecutive `batch_size` slices are its batches.
    Every tensor must pass `fits`."""
    lib = load()
    if lib is None:
        raise RuntimeError("FFN kernel: the compiled library did not load (see the warning logged by "
                           "prunerlib.ffn_kernel); train with the torch step instead")
    k, h, i = fc1.shape
    n = order.shape[1]
    losses = torch.empty(k, -(-n // batch_size))
    hyper = [torch.tensor(values, dtype=torch.float32) for values in (lr, weight_decay, momentum)]
    order = order.contiguous()
    second = exp_avg_sq if exp_avg_sq is not None else [None, None]
    ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    failed = lib.ffn_epoch(k, h, i, fc2.shape[1], ptr(fc1), ptr(fc2), ptr(exp_avg[0]), ptr(exp_avg[1]),
                           ptr(second[0]), ptr(second[1]), ptr(keep[0]), ptr(keep[1]),
                           ptr(hyper[0]), ptr(hyper[1]), ptr(hyper[2]), OPTIMIZERS[optimizer],
                           ACTIVATIONS[activation], steps_done, ptr(table), ptr(labels), n, ptr(order),
                           batch_size, ptr(losses))
    if failed:
        raise MemoryError("FFN kernel: out of memory for its scratch buffers")
    return losses


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel library, or None (no compiler, failed build, switched off)."""
    if os.environ.get("PRUNERLIB_FFN_KERNEL", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        log.info("no C compiler: FFN populations train with the torch step")
        return None
    try:
        source = SOURCE.read_text()  # once: the text hashed into the library's name is the text compiled
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([source, " ".join(_FLAGS), version, _cpu_id()]).encode()).hexdigest()[:16]
        name = f"ffn_kernel_{key}.so"
        cache = Path(os.environ.get("PRUNERLIB_CACHE", Path.home() / ".cache" / "prunerlib"))  # as images.py
        if _private(cache):
            library = cache / name
            lib = _load_verified(library) or _build_and_publish(compiler, source, library)
        else:
            log.warning("FFN kernel: cache folder %s is writable by group/others, owned by another user or "
                        "cannot be made (PRUNERLIB_CACHE must be yours alone: chmod go-w); building in a "
                        "private temporary folder instead", cache)
            with tempfile.TemporaryDirectory(prefix="prunerlib-ffn-kernel-") as tmp:
                library = Path(tmp) / name
                _build(compiler, source, library)
                lib = ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        log.warning("FFN kernel unavailable, training with the torch step: %s", detail)
        return None
    try:
        entry = lib.ffn_epoch
    except AttributeError:  # not a library this module built
        log.warning("FFN kernel: %s has no ffn_epoch; training with the torch step", library)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    entry.argtypes = [i64] * 4 + [ptr] * 8 + [ptr] * 3 + [i64] * 3 + [ptr, ptr, i64, ptr, i64, ptr]
    entry.restype = ctypes.c_int
    return lib


# Every trial process runs whatever library the cache holds, so the cache is trusted only when
# no one else can put files there, and a library only when it is byte for byte the one built:
# its SHA-256 is recorded beside it (`<library>.sha256`) when it is built.

def _private(folder: Path) -> bool:
    """Whether `folder` exists (it is made if missing) and only this user can write it."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _record(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_verified(library: Path) -> ctypes.CDLL | None:
    """The cached library if it matches its recorded SHA-256; None if it must be (re)built."""
    try:
        recorded = _record(library).read_text().strip()
        actual = _sha256(library)
    except FileNotFoundError:
        return None  # first use here, or another process is between publishing the two files
    if actual != recorded:
        log.warning("FFN kernel: %s does not match the SHA-256 recorded when it was built; rebuilding it", library)
        return None
    return ctypes.CDLL(str(library))


def _build(compiler: str, source: str, out: Path) -> None:
    # Compiled from a copy named ffn_kernel.c in a folder of its own, so the library's bytes
    # depend on neither where the package is installed nor the output's temporary name.
    with tempfile.TemporaryDirectory(prefix="prunerlib-ffn-kernel-src-") as folder:
        (Path(folder) / "ffn_kernel.c").write_text(source)
        subprocess.run([compiler, *_FLAGS, "ffn_kernel.c", "-o", str(out.absolute()), "-lm"], cwd=folder,
                       check=True, capture_output=True, text=True, timeout=300)


def _build_and_publish(compiler: str, source: str, library: Path) -> ctypes.CDLL:
    """Build under a temporary name beside `library`, load that file (so what runs is what was
    built), then publish the library and its record, each by an atomic rename. Concurrent
    processes may build it too: the compiler's output is reproducible, so they publish the same
    bytes; one reading between the two renames finds no matching record and builds its own."""
    loaded: list[ctypes.CDLL] = []
    digest: list[str] = []

    def build(tmp: Path) -> None:
        _build(compiler, source, tmp)
        loaded.append(ctypes.CDLL(str(tmp)))
        digest.append(_sha256(tmp))

    # The library keeps the mode the linker gives it (rwx under the umask), as before.
    atomic_write(library, build, mode=umask_mode(0o777))
    # 0644 whatever the umask: the record is what a library is checked against, never group-writable.
    atomic_write(_record(library), lambda tmp: tmp.write_text(digest[0] + "\n"), mode=0o644)
    return loaded[0]
