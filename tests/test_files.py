"""The atomic-write and lock helpers every shared-file writer uses (prunerlib.files)."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from prunerlib.files import TEMPORARIES, atomic_folder, atomic_write, locked


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.parquet"
    target.write_text("old rows")

    def half_then_fail(tmp):
        tmp.write_text("half of the new ro")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old rows"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]


def test_a_write_replaces_the_whole_file_with_the_umasks_mode(tmp_path):
    target = tmp_path / "sub" / "spec.yaml"
    old = os.umask(0o027)
    try:
        atomic_write(target, lambda tmp: tmp.write_text("new"))
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # not mkstemp's 0600
    atomic_write(target, lambda tmp: tmp.write_text("x"), mode=0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_writers_temporary_sits_beside_the_file_and_matches_the_cleanup_glob(tmp_path):
    # What a killed writer leaves is what SweepFolder and the pretrained store sweep up.
    seen = []
    atomic_write(tmp_path / "t1.parquet", lambda tmp: seen.append(tmp) or tmp.write_text("rows"))
    [tmp] = seen
    assert tmp.parent == tmp_path and tmp.match(TEMPORARIES) and tmp.name.startswith(".t1.parquet.")


def test_a_failing_folder_write_leaves_nothing(tmp_path):
    def fail(tmp):
        (tmp / "model.pt").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_folder(tmp_path / "abc", fail)
    assert list(tmp_path.iterdir()) == []
    atomic_folder(tmp_path / "abc", lambda tmp: (tmp / "model.pt").write_bytes(b"whole"))
    assert (tmp_path / "abc" / "model.pt").read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["abc"]


def test_a_lock_held_elsewhere_is_reported_free_or_not_without_waiting(tmp_path):
    lock = tmp_path / "x" / ".key.lock"
    with locked(lock) as held:
        held.write("pid 1\n")
        held.flush()
        # Another process (flock locks belong to open files, so a second open here would do too).
        probe = textwrap.dedent(f"""
            from prunerlib.files import locked
            with locked({str(lock)!r}, wait=False) as free:
                print(free is None)
        """)
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "True"
    with locked(lock, wait=False) as free:
        assert free is not None
        free.seek(0)
        assert free.read() == "pid 1\n"  # what the holder wrote stays for the next one to read


APPENDER = """
import sys
from pathlib import Path
from prunerlib.files import atomic_write, locked

path, who = Path(sys.argv[1]), sys.argv[2]
for i in range(40):
    with locked(path.with_name("." + path.name + ".lock")):
        old = path.read_text() if path.exists() else ""
        atomic_write(path, lambda tmp: tmp.write_text(old + f"{who} {i}\\n"))
"""


def test_processes_appending_under_the_lock_lose_nothing(tmp_path):
    target = tmp_path / "rows.txt"
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(target), who]) for who in "ab"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    lines = target.read_text().splitlines()
    assert sorted(lines) == sorted(f"{who} {i}" for who in "ab" for i in range(40))
    assert not list(tmp_path.glob(TEMPORARIES))


def test_the_umask_is_read_without_being_changed(tmp_path):
    from prunerlib.files import umask_mode

    old = os.umask(0o027)
    try:
        assert umask_mode(0o666) == 0o640 and umask_mode(0o777) == 0o750
        assert os.umask(0o027) == 0o027  # still what it was
    finally:
        os.umask(old)
