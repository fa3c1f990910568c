"""Ctrl-C or a SIGTERM (a batch scheduler's pre-emption) stops a sweep like a crash would, but
says so: the driver lets Tune end its trials, keeps what finished and exits 128 + the signal's
number. Tune's own SIGINT handler is off (it would end the sweep and return as if it had
finished); `catch` puts a flag in its place, which `StopOnSignal`, a Tune Stopper, reads.
Both sweep drivers use it: `runner.run_sweep` and `sensitivity.run_scan`."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from ray.tune.stopper import Stopper

RECEIVED: list[int] = []  # the signals received since the driver began, first first


class StopOnSignal(Stopper):
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(RECEIVED)

    def stop_all(self) -> bool:
        return bool(RECEIVED)


def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
    if not RECEIVED:
        print(f"{signal.Signals(signum).name} received: stopping the sweep's trials...", file=sys.stderr)
    RECEIVED.append(signum)


def begin() -> None:
    """A driver begins: nothing received yet, and SIGINT and SIGTERM are caught from here on."""
    RECEIVED.clear()
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    catch()


def catch() -> None:
    """Catch SIGINT and SIGTERM (again after ray.init, which installs its own SIGTERM handler)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_signal)


def release() -> None:
    """The driver has ended: SIGINT and SIGTERM do what they do by default again."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interrupted() -> bool:
    return bool(RECEIVED)
