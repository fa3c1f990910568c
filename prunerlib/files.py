"""Writing shared files safely: every writer in the package goes through these helpers.

Results, caches, the pretrained store and the sweep folder are read by other processes while
they are written, and outlive killed writers. So a file (or folder) is written under a
temporary name in its own folder and renamed into place: a reader sees the old whole file or
the new whole file, never half of one. Writers that must not interleave (a read-modify-write,
one pretraining per key, one driver per sweep) take a `locked` file first. Files and folders
follow the user's umask (`umask_mode`): the stores are shared with colleagues.

A leaf module (no prunerlib imports), so that every other module can write through it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


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


# What every temporary of `atomic_write` / `atomic_folder` in a folder matches: what a cleaner of
# a killed writer's leftovers globs for.
TEMPORARIES = ".*.tmp"


def atomic_write(path: str | Path, write: Callable[[Path], None], *, mode: int | None = None) -> None:
    """Make `path` hold what `write(tmp)` writes to the temporary file `tmp`, all of it or none.

    `tmp` is `.<name>.<random>.tmp` beside `path` (same file system, so the rename is atomic;
    the leading dot and `.tmp` let a folder's owner sweep up what a killed writer left). If
    `write` raises, `path` is untouched and `tmp` is gone. `mode`: the file's permission bits,
    by default what a new file gets under the user's umask (mkstemp's 0600 would lock
    colleagues out of shared storage); set after `write`, so it holds even for a writer (a
    linker) that replaces the file it is given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode(0o666) if mode is None else mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_folder(path: str | Path, write: Callable[[Path], None]) -> None:
    """`atomic_write` for a folder: `write(tmp)` fills the empty temporary folder
    `.<name>.<random>.tmp`, which is then renamed to `path` (which must not exist; a
    non-empty folder cannot be renamed over). Permissions follow the umask, as a new folder's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp.chmod(umask_mode(0o777))
        write(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def locked(path: str | Path, wait: bool = True) -> Iterator[IO[str] | None]:
    """Hold an exclusive flock on the lock file `path` (made, with its folder, if missing) for
    the `with` block, and yield its handle (opened "a+": what a holder wrote there stays for
    the next one to read). With `wait=False`, yield None at once instead when another process
    holds it. The kernel drops the lock when its holder dies, so no lock is ever stale."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
