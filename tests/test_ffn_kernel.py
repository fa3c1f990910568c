"""The FFN kernel's cache and switch in normal use (its faults: tests/test_faults_code.py; its
arithmetic against the torch step: tests/test_population.py)."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunerlib import ffn_kernel
from prunerlib.batched import Population, train_population
from prunerlib.config import TrialConfig
from tests.helpers import random_data, small_ffn

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


def test_the_library_is_named_by_its_source_so_an_edited_source_is_built_afresh(tmp_path, monkeypatch):
    assert ffn_kernel.SOURCE.is_file() and "int ffn_epoch(" in ffn_kernel.SOURCE.read_text()
    edited = tmp_path / "ffn_kernel.c"
    edited.write_text(ffn_kernel.SOURCE.read_text() + "\n/* an edit */\n")
    names = []
    for source, cache in ((ffn_kernel.SOURCE, tmp_path / "a"), (edited, tmp_path / "b")):
        monkeypatch.setattr(ffn_kernel, "SOURCE", source)
        monkeypatch.setenv("PRUNERLIB_CACHE", str(cache))
        ffn_kernel.load.cache_clear()
        try:
            assert ffn_kernel.load() is not None
        finally:
            ffn_kernel.load.cache_clear()
        [library] = cache.glob("ffn_kernel_*.so")
        names.append(library.name)
    assert names[0] != names[1]


def _population(n_models: int = 2) -> Population:
    models = [small_ffn(seed=k) for k in range(n_models)]
    return Population(models, [None] * n_models, [TrialConfig.from_dict({})] * n_models)


def test_the_torch_switch_never_builds_the_kernel_and_c_runs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNERLIB_CACHE", str(tmp_path / "cache"))
    ffn_kernel.load.cache_clear()
    data = random_data(n=100, features=8)
    try:
        torch_step = _population()
        train_population(torch_step, data, [0, 1], epochs=1, batch_size=32, kernel="torch")
        assert not list(tmp_path.glob("cache/ffn_kernel_*"))
        compiled = _population()
        train_population(compiled, data, [0, 1], epochs=1, batch_size=32, kernel="c")
        assert list(tmp_path.glob("cache/ffn_kernel_*.so"))
    finally:
        ffn_kernel.load.cache_clear()
    for a, b in zip(compiled.params, torch_step.params):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)  # the two steps agree to float rounding


def test_the_c_switch_refuses_what_the_kernel_cannot_train_and_a_kernel_switched_off(monkeypatch):
    images = random_data(n=100, features=8)
    images.flip = True  # image batches are flipped per example: the torch step's job
    with pytest.raises(RuntimeError, match="kernel='c': the FFN kernel trains only FFN populations"):
        train_population(_population(), images, [0, 1], epochs=1, batch_size=32, kernel="c")
    monkeypatch.setenv("PRUNERLIB_FFN_KERNEL", "0")
    ffn_kernel.load.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="kernel='c': the FFN kernel did not load"):
            train_population(_population(), random_data(n=100, features=8), [0, 1], epochs=1, batch_size=32,
                             kernel="c")
        pop = _population()
        train_population(pop, random_data(n=100, features=8), [0, 1], epochs=1, batch_size=32)  # auto: torch
    finally:
        ffn_kernel.load.cache_clear()
    with pytest.raises(ValueError, match="kernel: 'C' is not one of"):
        train_population(_population(), random_data(n=100, features=8), [0, 1], epochs=1, batch_size=32,
                         kernel="C")
