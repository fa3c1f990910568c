"""Errors a user can act on. The CLI prints these as one line and exits 2."""


class PrunerlibError(Exception):
    """Base class: the message alone must tell the user what to fix."""


class ConfigError(PrunerlibError, ValueError):
    """A trial setting is unknown, of the wrong type, or out of range."""


class DataError(PrunerlibError):
    """A data path is missing, malformed, or holds no usable examples."""


class TrainingDiverged(PrunerlibError):
    """The loss became NaN or infinite; the trial is recorded as failed."""


class EnvironmentFault(Exception):
    """The machine, not the configuration, failed (a lost file system, a dead node, no memory).
    Never a result row: the sweep retries the trial (Tune's `max_failures`) or redoes it."""


def is_environment_fault(exc: BaseException) -> bool:
    """True for faults of the environment rather than of the configuration.

    OSError covers the file system and the network (disk full, a vanished NFS mount, a
    truncated cache file read as garbage is the cache's fault too); out-of-memory is the
    machine's size, not the setting. Checked by name for torch's OOM so this module stays
    free of torch."""
    if isinstance(exc, (EnvironmentFault, OSError)) or is_out_of_memory(exc):
        return True
    return any(cls.__name__ == "AcceleratorError" for cls in type(exc).__mro__)


def is_out_of_memory(exc: BaseException) -> bool:
    """The host's MemoryError or torch's (CUDA) OutOfMemoryError."""
    return isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)
