"""Faults in code the library loads: the compiled FFN kernel's cache (`prunerlib.ffn_kernel`).

Each test puts a real, earlier-built kernel in a tmp PRUNERLIB_CACHE, damages or forges it as a
user or another account could, and fine-tunes a real population through the kernel's entry
point (`train_population`). A forged library must never run: fine-tuning still changes the
weights and gives what the batched torch step gives.
"""

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunerlib import ffn_kernel
from prunerlib.batched import Population, train_population
from prunerlib.config import TrialConfig
from tests.helpers import random_data, small_ffn

WEIGHT_ATOL = 1e-4  # as tests/test_population.py: kernel and torch step agree to float rounding

COMPILER = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(COMPILER is None or os.environ.get("PRUNERLIB_FFN_KERNEL") == "0",
                                reason="no C compiler for the FFN kernel")

# What an attacker would drop in: a kernel that returns at once (fine-tuning silently skipped),
# and a library that does not have the entry point at all.
NOOP = "#include <stdint.h>\nint ffn_epoch(void) { return 0; }\n"
NO_SYMBOL = "int something_else(void) { return 0; }\n"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PRUNERLIB_CACHE", str(folder))
    ffn_kernel.load.cache_clear()
    yield folder
    ffn_kernel.load.cache_clear()  # nothing from this test's folder outlives it


def _built_by_another_process(cache: Path) -> Path:
    """Build the kernel into `cache` in a separate process, as an earlier trial would. (This
    process must not load it first: dlopen hands back a library already loaded from a path,
    whatever the file at that path holds now.)"""
    subprocess.run([sys.executable, "-c", "from prunerlib import ffn_kernel; assert ffn_kernel.load()"],
                   env={**os.environ, "PRUNERLIB_CACHE": str(cache)}, check=True, timeout=300)
    [library] = cache.glob("ffn_kernel_*.so")
    return library


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _replace(library: Path, content: bytes, *, rewrite_records: bool) -> None:
    """Put `content` at `library` as a new file (never write into a library a process may have
    mapped). With `rewrite_records`, also rewrite any record of the old file's digest in the
    folder, as someone who can write the folder could."""
    old = _sha256(library)
    staged = library.with_name("forged.tmp")
    staged.write_bytes(content)
    os.replace(staged, library)
    if rewrite_records:
        new = hashlib.sha256(content).hexdigest()
        for record in library.parent.iterdir():
            if record.is_file() and record.stat().st_size < 4096 and old.encode() in record.read_bytes():
                record.write_bytes(record.read_bytes().replace(old.encode(), new.encode()))


def _compiled(source: str, tmp_path: Path) -> bytes:
    (tmp_path / "forged.c").write_text(source)
    subprocess.run([COMPILER, "-shared", "-fPIC", str(tmp_path / "forged.c"), "-o", str(tmp_path / "forged.so")],
                   check=True, capture_output=True, timeout=120)
    return (tmp_path / "forged.so").read_bytes()


def _fine_tune(kernel: str = "auto") -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]], dict]:
    """(weights before, weights after, failures) of a 3-member FFN population fine-tuned 2 epochs."""
    data = random_data(n=200, features=8)
    models = [small_ffn(seed=k) for k in range(3)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    cfgs = [TrialConfig.from_dict({"optimizer": "adam", "lr": lr}) for lr in (1e-2, 3e-3, 1e-2)]
    pop = Population(models, [None] * 3, cfgs)
    failures = train_population(pop, data, [0, 1, 2], epochs=2, batch_size=32, kernel=kernel).failures
    pop.write_back(models)
    return before, [m.state_dict() for m in models], failures


def _torch_step() -> list[dict[str, torch.Tensor]]:
    return _fine_tune(kernel="torch")[1]


def _assert_fine_tuned_as_the_torch_step() -> None:
    before, after, failures = _fine_tune()
    assert failures == {}
    reference = _torch_step()
    for start, got, want in zip(before, after, reference):
        for name in got:
            assert not torch.equal(got[name], start[name]), f"{name}: fine-tuning did not change it"
            torch.testing.assert_close(got[name], want[name], atol=WEIGHT_ATOL, rtol=0)


def _the_one_warning(caplog, names: Path) -> str:
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "prunerlib.ffn_kernel"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "\n" not in message and str(names) in message, message
    return message


def test_a_replaced_library_is_rebuilt_not_run(cache, tmp_path, caplog):
    library = _built_by_another_process(cache)
    forged = _compiled(NOOP, tmp_path)
    _replace(library, forged, rewrite_records=False)
    caplog.set_level(logging.WARNING)
    _assert_fine_tuned_as_the_torch_step()
    assert ffn_kernel.load() is not None  # the kernel was rebuilt and ran, not the torch step
    _the_one_warning(caplog, library)
    assert library.read_bytes() != forged  # and the cache holds the rebuilt library again


def test_a_truncated_library_is_rebuilt(cache, caplog):
    library = _built_by_another_process(cache)
    _replace(library, library.read_bytes()[: library.stat().st_size // 2], rewrite_records=False)
    caplog.set_level(logging.WARNING)
    _assert_fine_tuned_as_the_torch_step()
    assert ffn_kernel.load() is not None
    _the_one_warning(caplog, library)


@pytest.mark.parametrize("loosen", [stat.S_IWGRP, stat.S_IWOTH], ids=["group-writable", "other-writable"])
def test_a_cache_folder_others_can_write_is_not_trusted(cache, tmp_path, caplog, loosen):
    library = _built_by_another_process(cache)
    # Whoever can write the folder can forge the library and every record beside it.
    _replace(library, _compiled(NOOP, tmp_path), rewrite_records=True)
    cache.chmod(cache.stat().st_mode | loosen)
    caplog.set_level(logging.WARNING)
    _assert_fine_tuned_as_the_torch_step()
    assert ffn_kernel.load() is not None  # built in a private folder instead
    _the_one_warning(caplog, cache)


def test_a_cache_folder_owned_by_another_user_is_not_trusted(cache, tmp_path, caplog):
    if os.geteuid() != 0:
        pytest.skip("making a folder owned by another user needs root")
    library = _built_by_another_process(cache)
    _replace(library, _compiled(NOOP, tmp_path), rewrite_records=True)
    for path in (cache, *cache.iterdir()):
        os.chown(path, 65534, 65534)
    caplog.set_level(logging.WARNING)
    _assert_fine_tuned_as_the_torch_step()
    assert ffn_kernel.load() is not None
    _the_one_warning(caplog, cache)


def test_a_library_without_the_entry_point_falls_back_to_the_torch_step(cache, tmp_path, caplog):
    library = _built_by_another_process(cache)
    # Even one whose records match (this user's own folder): it is checked, not trusted to work.
    _replace(library, _compiled(NO_SYMBOL, tmp_path), rewrite_records=True)
    caplog.set_level(logging.WARNING)
    assert ffn_kernel.load() is None
    _the_one_warning(caplog, library)
    with pytest.raises(RuntimeError, match="kernel='c': the FFN kernel did not load"):
        _fine_tune(kernel="c")  # asked for by name, it is an error, not a silent fallback
    _, after, failures = _fine_tune()
    assert failures == {}
    for got, want in zip(after, _torch_step()):
        for name in got:
            torch.testing.assert_close(got[name], want[name], atol=0, rtol=0)
