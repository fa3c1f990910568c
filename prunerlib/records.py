"""Result rows (SPEC §6): the column contract, and appending rows to Parquet safely.

The schema is explicit so a column that does not apply is a typed null in every file, and
files from different trials and sweeps concatenate without type drift.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from prunerlib.config import column_settings, setting_hints
from prunerlib.values import is_union
from prunerlib.files import atomic_write, locked
from prunerlib.registry import REMOVED_COLUMNS

_STR, _I64, _F64, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()

_IDENTITY = [
    ("sweep", _STR), ("trial_id", _STR), ("config_hash", _STR), ("pretrain_key", _STR),
    ("data_fingerprint", _STR),
    ("cycle", _I64), ("final", _BOOL), ("status", _STR), ("error", _STR),
]
_OUTCOMES = [
    ("acc_pretrain", _F64), ("acc_pruned", _F64), ("acc_finetuned", _F64),
    ("train_acc_pretrain", _F64), ("train_acc_finetuned", _F64),
    ("val_acc_pretrain", _F64), ("val_acc_pruned", _F64), ("val_acc_finetuned", _F64),
    ("n_val", _I64), ("n_test", _I64),
    *((name, _F64) for name in REMOVED_COLUMNS),
    ("filters_removed", _STR),  # per conv layer, filters removed so far: 'a,b' (what filters_pruned: auto chose)
    ("params_total", _I64), ("params_nonzero", _I64), ("compression_ratio", _F64),
    ("flops_dense", _I64), ("flops_pruned", _I64), ("theoretical_speedup", _F64),
    # the compacted network as saved (relative to the Parquet file's folder) and as timed (`latency`)
    ("model_path", _STR), ("latency_batch", _I64), ("latency_threads", _I64),
    ("latency_ms_dense", _F64), ("latency_ms_pruned", _F64), ("measured_speedup", _F64),
    ("latency_ms_dense_b1", _F64), ("latency_ms_pruned_b1", _F64), ("measured_speedup_b1", _F64),
    ("pretrain_epochs_run", _I64), ("pretrain_reused", _BOOL),
    ("wall_pretrain_s", _F64), ("wall_finetune_s", _F64),
]
_PROVENANCE = [
    ("device", _STR), ("host", _STR), ("node_id", _STR), ("started_at", pa.timestamp("us", tz="UTC")),
    # the GPU and its software stack (null on the CPU): what a GPU result can be compared across
    ("gpu_name", _STR), ("cuda_driver", _STR), ("cuda_version", _STR), ("cudnn_version", _STR),
    ("tf32_allowed", _BOOL),
    ("prunerlib_version", _STR), ("torch_version", _STR), ("python_version", _STR),
    # the prunerlib checkout the row came from (null when installed from a wheel): see git_state
    ("git_commit", _STR), ("git_dirty", _BOOL),
    ("optuna_trial", _I64),  # a search's rows: the number of the Optuna trial that asked the point
    ("config_json", _STR),
]


def _arrow_type(hint: Any) -> pa.DataType:
    """A setting's column type from its type hint; a list-valued setting is written 'a,b'."""
    options = [a for a in (get_args(hint) if is_union(hint) else (hint,)) if a is not type(None)]
    if any(getattr(o, "__origin__", None) is tuple for o in options):
        return _STR
    kinds = {_PLAIN.get(o, _STR) if getattr(o, "__origin__", None) is not Literal else _STR for o in options}
    return kinds.pop() if len(kinds) == 1 else _STR


_PLAIN = {bool: _BOOL, int: _I64, float: _F64, str: _STR}


def schema() -> pa.Schema:
    """The result columns (SPEC §6): identity, every setting (TrialConfig's own and each
    registered pruner's), outcomes, provenance. A plugin's pruner adds its settings' columns."""
    hints = setting_hints()
    key = tuple(hints)  # the settings known now: a plugin loaded later adds its own
    if key not in _SCHEMA_CACHE:
        settings = [(name, _arrow_type(hints[name])) for name in column_settings()]
        _SCHEMA_CACHE[key] = pa.schema(_IDENTITY + settings + _OUTCOMES + _PROVENANCE)
    return _SCHEMA_CACHE[key]


_SCHEMA_CACHE: dict[tuple[str, ...], pa.Schema] = {}
_REQUIRED = ("trial_id", "config_hash", "cycle", "final", "status")


def conform(table: pa.Table) -> pa.Table:
    """`table` in today's columns: a file written before a column existed gets it as nulls, and
    a column this process does not know (a plugin's, from a run that loaded it) is kept last."""
    present = set(table.column_names)  # a list built anew at each access
    missing = [name for name in _REQUIRED if name not in present]
    if missing:  # an older version's file has them all; a file of something else does not
        raise ValueError(f"not a file of result rows: no column {missing[0]!r}")
    target = schema()
    if table.schema.equals(target):
        return table
    if table.column_names == target.names:  # this version's file: one cast in C++, not one per column
        return table.cast(target)
    columns, fields = [], []
    for field in target:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(len(table), field.type))
        fields.append(field)
    for name in table.column_names:
        if name not in target.names:
            columns.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))




def provenance() -> dict[str, Any]:
    import torch

    import prunerlib

    return {
        "host": socket.gethostname(),
        "node_id": os.environ.get("PRUNERLIB_NODE_ID"),
        "prunerlib_version": prunerlib.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **dict(zip(("git_commit", "git_dirty"), git_state())),
    }


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """The commit and dirty flag of the git checkout prunerlib is imported from, once per process."""
    return checkout_state(Path(__file__).resolve().parent)


def checkout_state(folder: Path) -> tuple[str | None, bool | None]:
    """(HEAD, whether tracked files differ from it) of the checkout whose tracked files include
    `folder`'s __init__.py; (None, None) for an installed package (even inside a venv in some
    checkout), without git, or when git takes too long: provenance never fails a trial. Dirty
    counts tracked files only: a sweep writes its results into the checkout often enough."""
    def git(*args: str) -> str:
        # --no-optional-locks: status would otherwise refresh the index under index.lock,
        # and a trial must never make a user's own `git commit` fail.
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=folder, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


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


def columns() -> tuple[str, ...]:
    return tuple(schema().names)


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    target = schema()
    unknown = {key for row in rows for key in row} - set(target.names)
    if unknown:
        raise KeyError(f"not in the result schema: {sorted(unknown)}")
    return pa.Table.from_pylist(rows, schema=target)


# A sweep's trial files (`sweep/store.py` writes them as trials finish; the analysis also reads
# a running sweep's): Arrow IPC files, which at a hundred columns and a few rows write and read
# in about a tenth of a Parquet file's time (benchmarks/README.md): the 840 files of a 20-seed
# Waveform grid cost seconds of its wall time as Parquet. What a sweep delivers,
# results.parquet, stays Parquet; `.parquet` trial files, which versions before 2026-11-26
# wrote, are still read.
TRIAL_SUFFIX = ".arrow"
TRIAL_PATTERNS = ("*.arrow", "*.parquet")


def trial_files(folder: Path) -> list[Path]:
    """The trial files in `folder`, temporaries (`.name.*.tmp`) left out."""
    return sorted(p for pattern in TRIAL_PATTERNS for p in folder.glob(pattern) if not p.name.startswith("."))


def write_trial_file(path: Path, table: pa.Table) -> None:
    feather.write_feather(table, path, compression="uncompressed")


def read_rows_file(path: Path) -> pa.Table:
    """A file of result rows: an Arrow IPC trial file (`.arrow`), otherwise Parquet."""
    return feather.read_table(path, memory_map=False) if path.suffix == TRIAL_SUFFIX else pq.read_table(path)


def append_parquet(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Append rows to a Parquet file: read, add, write a temporary file, rename over.
    A lock keeps two trials appending to one file from losing each other's rows."""
    link = Path(path)
    path = link.resolve()  # through a symlink: renaming over the link would replace it by a plain file
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_table(rows)
    with locked(path.with_name(f".{path.name}.lock")):
        if path.exists():
            table = concat([pq.read_table(path), table])
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return link


def concat(tables: list[pa.Table]) -> pa.Table:
    """Tables of result rows as one, each conformed first (see `conform`)."""
    tables = [conform(t) for t in tables]
    if all(t.schema.equals(tables[0].schema) for t in tables[1:]):  # the common case: one schema
        return pa.concat_tables(tables)
    names = list(dict.fromkeys(name for t in tables for name in t.column_names))
    if any(t.column_names != names for t in tables):  # one has a plugin's column another lacks
        fields = {f.name: f for t in tables for f in t.schema}
        tables = [t if t.column_names == names else pa.Table.from_arrays(
            [t.column(n) if n in t.column_names else pa.nulls(len(t), fields[n].type) for n in names],
            schema=pa.schema([fields[n] for n in names])) for t in tables]
    return pa.concat_tables(tables)
