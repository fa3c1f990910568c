"""sweeps/launch.py: `prunerlib sweep` as a script, as `ray submit` runs it away from the checkout."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "launch.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env}, timeout=120)


def test_a_relative_spec_is_found_in_the_project_checkout(tmp_path):
    copy = tmp_path / "launch.py"  # ray submit copies the script alone to the head node
    copy.write_text((ROOT / "sweeps" / "launch.py").read_text())
    result = subprocess.run([sys.executable, str(copy), "sweeps/quick.yaml", "--dry-run"], capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, "PRUNERLIB_HOME": str(ROOT)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sweep quick") and "16 trial configuration(s)" in result.stdout


def test_a_missing_spec_is_a_one_line_error(tmp_path):
    result = launch("sweeps/nope.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "cannot read the spec" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
