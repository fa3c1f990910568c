"""The cluster-launcher configs in cluster/ are what `ray up` accepts, and install the project with
its cluster extra into a venv on PATH (`ray submit` runs `python <script>` in a login shell)."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "onprem.yaml"])
def test_ray_up_accepts_the_config_and_it_installs_prunerlib(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(config))  # Ray's own schema check, as `ray up` runs it
    assert config["file_mounts"]["~/prunerlib"] == "."
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in starts if "ray start" in cmd)


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "onprem.yaml"])
def test_the_cluster_extra_goes_into_the_venv_a_login_shell_puts_on_path(name, tmp_path):
    setup = yaml.safe_load((CLUSTER / name).read_text())["setup_commands"]
    install = next(cmd for cmd in setup if "pip install -e" in cmd)
    venv = re.match(r"(\S+)/bin/pip install -e \"\$HOME/prunerlib\[cluster\]\"", install)
    assert venv, install
    # Run the config's own .bashrc line in a scratch home, then ask a shell (as the launcher's
    # `bash --login -c -i` does) which python and ray it finds.
    home = tmp_path / "home"
    (home / venv[1].removeprefix("~/") / "bin").mkdir(parents=True)
    for tool in ("python", "ray"):
        exe = home / venv[1].removeprefix("~/") / "bin" / tool
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    bashrc = next(cmd for cmd in setup if ">> ~/.bashrc" in cmd)
    for _ in range(2):  # setup commands rerun on every `ray up`: the line is added once
        subprocess.run(["bash", "-c", bashrc], env=env, check=True, timeout=30)
    assert (home / ".bashrc").read_text().count("\n") == 1
    found = subprocess.run(["bash", "-c", "source ~/.bashrc; command -v python ray; echo $PRUNERLIB_HOME $RAY_AUTH_MODE"],
                           env=env, capture_output=True, text=True, check=True, timeout=30).stdout.split()
    where = str(home / venv[1].removeprefix("~/") / "bin")
    assert found == [f"{where}/python", f"{where}/ray", f"{home}/prunerlib", "token"]


def test_the_cluster_extra_brings_the_jobs_api_and_the_aws_launcher():
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider  # noqa: F401  imports boto3
    from ray._private.utils import get_dashboard_dependency_error

    assert get_dashboard_dependency_error() is None  # aiohttp & co: the dashboard and `ray job submit`
