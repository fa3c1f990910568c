"""Errors a user can act on. The CLI prints these as one line and exits 2."""


class PrunerlibError(Exception):
    """Base class: the message alone must tell the user what to fix."""


class ConfigError(PrunerlibError, ValueError):
    """A trial setting is unknown, of the wrong type, or out of range."""


class DataError(PrunerlibError):
    """A data path is missing, malformed, or holds no usable examples."""


class TrainingDiverged(PrunerlibError):
    """The loss became NaN or infinite; the trial is recorded as failed."""
