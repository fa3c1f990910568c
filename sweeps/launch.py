"""`prunerlib sweep` as a script, for `ray submit` / `ray job submit`:

    ray submit cluster/aws-gpu.yaml sweeps/launch.py -- sweeps/paper_cnn.yaml --address auto --storage /shared/runs

`ray submit` copies this file alone to the head node, so a relative spec path is looked up in
the working folder, then in the project checkout the cluster's setup commands made
($PRUNERLIB_HOME, default ~/prunerlib).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resolve_spec(argv: list[str]) -> list[str]:
    if not argv or argv[0].startswith("-") or Path(argv[0]).exists():
        return argv
    homes = (os.environ.get("PRUNERLIB_HOME"), "~/prunerlib", str(Path(__file__).resolve().parents[1]))
    for home in filter(None, homes):
        candidate = Path(home).expanduser() / argv[0]
        if candidate.exists():
            return [str(candidate), *argv[1:]]
    return argv  # let the CLI report the missing file


if __name__ == "__main__":
    from prunerlib.cli import entry

    entry(["sweep", *resolve_spec(sys.argv[1:])])
