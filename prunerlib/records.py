"""Result rows (SPEC §6): the column contract, and appending rows to Parquet safely.

The schema is explicit so a column that does not apply is a typed null in every file, and
files from different trials and sweeps concatenate without type drift.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import platform
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_STR, _I64, _F64, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()

SCHEMA = pa.schema([
    # identity
    ("sweep", _STR), ("trial_id", _STR), ("config_hash", _STR), ("pretrain_key", _STR),
    ("data_fingerprint", _STR),
    ("cycle", _I64), ("final", _BOOL), ("status", _STR), ("error", _STR),
    # configuration
    ("dataset", _STR), ("attributes", _I64), ("model", _STR), ("hidden", _I64),
    ("conv_channels", _STR), ("activation", _STR), ("data_seed", _I64),
    ("pruner", _STR), ("match", _STR), ("angle_cutoff", _F64), ("merge", _STR),
    ("remove_constant", _BOOL), ("threshold_factor", _F64), ("threshold_stat", _STR),
    ("threshold_layers", _STR), ("filter_criterion", _STR), ("filters_pruned", _STR),
    ("filters_frac", _F64), ("cycles", _I64), ("max_acc_drop", _F64),
    ("seed", _I64), ("epochs_pretrain", _I64), ("pretrain_stop", _STR), ("patience", _I64),
    ("min_delta", _F64), ("epochs_finetune", _I64), ("batch_size", _I64), ("lr", _F64),
    ("optimizer", _STR), ("momentum", _F64), ("weight_decay", _F64), ("exact", _BOOL),
    # outcomes
    ("acc_pretrain", _F64), ("acc_pruned", _F64), ("acc_finetuned", _F64),
    ("train_acc_pretrain", _F64), ("train_acc_finetuned", _F64),
    ("val_acc_pretrain", _F64), ("val_acc_pruned", _F64), ("val_acc_finetuned", _F64),
    ("n_val", _I64), ("n_test", _I64),
    ("units_removed_frac", _F64), ("weights_removed_frac", _F64), ("filters_removed_frac", _F64),
    ("params_total", _I64), ("params_nonzero", _I64), ("compression_ratio", _F64),
    ("flops_dense", _I64), ("flops_pruned", _I64), ("theoretical_speedup", _F64),
    ("pretrain_epochs_run", _I64), ("pretrain_reused", _BOOL),
    ("wall_pretrain_s", _F64), ("wall_finetune_s", _F64),
    # provenance
    ("device", _STR), ("host", _STR), ("node_id", _STR), ("started_at", pa.timestamp("us", tz="UTC")),
    # the GPU and its software stack (null on the CPU): what a GPU result can be compared across
    ("gpu_name", _STR), ("cuda_driver", _STR), ("cuda_version", _STR), ("cudnn_version", _STR),
    ("tf32_allowed", _BOOL),
    ("prunerlib_version", _STR), ("torch_version", _STR), ("python_version", _STR),
    ("config_json", _STR),
])

COLUMNS = tuple(SCHEMA.names)


def umask_mode(mode: int) -> int:
    """`mode` as the user's umask leaves it. mkstemp / mkdtemp create 0600 / 0700 whatever the
    umask, which locks colleagues out of shared storage; chmod what they made to this instead.
    Read from /proc: os.umask() can only be read by setting it, a race with other threads."""
    try:
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return mode & ~umask


def provenance() -> dict[str, Any]:
    import torch

    import prunerlib

    return {
        "host": socket.gethostname(),
        "node_id": os.environ.get("PRUNERLIB_NODE_ID"),
        "prunerlib_version": prunerlib.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


def device_provenance(device: Any) -> dict[str, Any]:
    """`device` and, on CUDA, the GPU, the driver, the CUDA and cuDNN versions torch runs with,
    and whether TF32 is allowed: read after `training.set_numerics`, so as the trial runs."""
    import torch

    from prunerlib.training import tf32_allowed

    device = torch.device(device)
    if device.type != "cuda":
        return {"device": str(device), "gpu_name": None, "cuda_driver": None, "cuda_version": None,
                "cudnn_version": None, "tf32_allowed": None}
    cudnn = torch.backends.cudnn.version()
    return {
        "device": str(device),
        "gpu_name": torch.cuda.get_device_properties(device).name,
        "cuda_driver": cuda_driver(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": None if cudnn is None else str(cudnn),
        "tf32_allowed": tf32_allowed(),
    }


@functools.cache
def cuda_driver() -> str | None:
    """The NVIDIA driver: the CUDA version it supports ("12.4", what decides whether a CUDA
    build of torch can run) and, when NVML's Python binding is installed, its own version
    ("12.4 (550.54.15)"). torch exposes neither; the driver library answers without a context."""
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except OSError:
        return None
    text = f"{version.value // 1000}.{version.value % 1000 // 10}"
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        return f"{text} ({driver.decode() if isinstance(driver, bytes) else driver})"
    except Exception:  # noqa: BLE001  no binding or no NVML: the CUDA version alone
        return text


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    unknown = {key for row in rows for key in row} - set(COLUMNS)
    if unknown:
        raise KeyError(f"not in the result schema: {sorted(unknown)}")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def append_parquet(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Append rows to a Parquet file: read, add, write a temporary file, rename over.
    A lock keeps two trials appending to one file from losing each other's rows."""
    link = Path(path)
    path = link.resolve()  # through a symlink: renaming over the link would replace it by a plain file
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_table(rows)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            table = pa.concat_tables([pq.read_table(path).cast(SCHEMA), table])
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return link
