"""The cluster-launcher configs in cluster/ are what `ray up` accepts, and install the project."""

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "onprem.yaml"])
def test_ray_up_accepts_the_config_and_it_installs_prunerlib(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(config))  # Ray's own schema check, as `ray up` runs it
    setup = " ".join(config["setup_commands"])
    assert "pip install -e ~/prunerlib" in setup and config["file_mounts"]["~/prunerlib"] == "."
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in starts if "ray start" in cmd)
