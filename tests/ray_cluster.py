"""A Ray cluster of `ray start`ed processes on 127.0.0.1, for tests of the cluster path.

Each node is its own processes, as on a real cluster. Stopping kills exactly this cluster's
processes (never `ray stop`, which would stop every Ray on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LocalCluster:
    def __init__(self) -> None:
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard: str | None = None  # http://127.0.0.1:PORT once the head runs one
        # `ray start --head` turns on token authentication; every process that joins must use it.
        # The venv's bin on PATH, as on a cluster node: a job's `python` is the one prunerlib is in.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def start_head(self, gpus: int | None = None, cpus: int = 1, dashboard: bool = False) -> None:
        view = ["--include-dashboard=false"]
        if dashboard:
            port = free_port()
            view = ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={port}",
                    f"--dashboard-agent-listen-port={free_port()}"]
            self.dashboard = f"http://127.0.0.1:{port}"
        self._start("--head", f"--port={self.port}", f"--temp-dir={self.temp}", *view, gpus=gpus, cpus=cpus)

    def add_node(self, gpus: int | None = None, cpus: int = 1) -> None:
        self._start(f"--address={self.address}", gpus=gpus, cpus=cpus)

    def _start(self, *args: str, gpus: int | None, cpus: int) -> None:
        extra = [] if gpus is None else [f"--num-gpus={gpus}"]
        subprocess.run([self.ray, "start", *args, *extra, f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1",
                        "--disable-usage-stats"], env=self.env, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        for pid in processes_mentioning(self.temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def processes_mentioning(text: str) -> set[int]:
    """Processes whose command line holds `text`, and all their descendants (Ray's agents
    rename themselves, so only their parent raylet still names the cluster's folder)."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if text.encode() in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more
