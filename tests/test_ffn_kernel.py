"""The FFN kernel's cache in normal use (its faults: tests/test_faults_code.py; its arithmetic
against the torch step: tests/test_population.py)."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prunerlib import ffn_kernel

COMPILER = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(COMPILER is None or os.environ.get("PRUNERLIB_FFN_KERNEL") == "0",
                                reason="no C compiler for the FFN kernel")


def _build_in_another_process(cache: Path) -> None:
    subprocess.run([sys.executable, "-c", "from prunerlib import ffn_kernel; assert ffn_kernel.load()"],
                   env={**os.environ, "PRUNERLIB_CACHE": str(cache)}, check=True, timeout=300)


def test_a_healthy_cache_is_reused_silently_and_a_new_one_is_private(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "new" / "cache"
    _build_in_another_process(cache)
    assert cache.stat().st_mode & 0o777 == 0o700
    [library] = cache.glob("ffn_kernel_*.so")
    built = library.stat()
    monkeypatch.setenv("PRUNERLIB_CACHE", str(cache))
    ffn_kernel.load.cache_clear()
    caplog.set_level(logging.INFO)
    try:
        assert ffn_kernel.load() is not None
    finally:
        ffn_kernel.load.cache_clear()
    assert not [r for r in caplog.records if r.name == "prunerlib.ffn_kernel"]
    assert (library.stat().st_ino, library.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)  # not rebuilt


def test_builds_are_reproducible_so_concurrent_builders_publish_the_same_library(tmp_path):
    # Trial processes starting together on a fresh machine all build the kernel; the last
    # library and the last record to land must still match (see ffn_kernel._build_and_publish).
    for cache in (tmp_path / "a", tmp_path / "b"):
        _build_in_another_process(cache)
    [a], [b] = (list((tmp_path / c).glob("ffn_kernel_*.so")) for c in "ab")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
