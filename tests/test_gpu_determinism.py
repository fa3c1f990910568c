"""What a GPU trial promises about its numbers, on the fake CUDA device of tests/fake_cuda.py:
`exact: true` puts the process in IEEE fp32 with deterministic kernels, `exact: false` puts it
back to PyTorch's defaults (a reused worker carries neither into the next trial), and every
row says which GPU, driver, CUDA and cuDNN computed it and whether TF32 was allowed."""

import os

import pytest
import torch

from prunerlib import training
from prunerlib.config import TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.pipeline import Workdirs, run_pack, run_trial
from tests import fake_cuda as fake
from tests.fake_cuda import fake_cuda
from tests.helpers import ffn_config

pytestmark = pytest.mark.fake_cuda

GPU_COLUMNS = ("gpu_name", "cuda_driver", "cuda_version", "cudnn_version", "tf32_allowed")


@pytest.fixture(autouse=True)
def _restore_numerics(monkeypatch):
    """The modes are process-wide: leave the process as the test found it."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, precision,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, deterministic) = saved
    torch.set_float32_matmul_precision(precision)
    torch.use_deterministic_algorithms(deterministic)


def _numerics() -> dict:
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "precision": torch.get_float32_matmul_precision(), "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "benchmark": torch.backends.cudnn.benchmark, "deterministic": torch.are_deterministic_algorithms_enabled()}


def _spy_training(monkeypatch) -> list[dict]:
    """The numerics in force each time a model trains (pretraining and fine-tuning)."""
    seen = []
    real = training.train
    from prunerlib import population

    def spy(*args, **kwargs):
        seen.append(_numerics() | {"cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")})
        return real(*args, **kwargs)

    # Both go through population: pretrain_models trains a model the kernel cannot (on a GPU)
    # with training.train, and so does a population of one's fine-tuning.
    monkeypatch.setattr(population, "train", spy)
    return seen


def _small(**settings) -> TrialConfig:
    return ffn_config(epochs_pretrain=1, epochs_finetune=1, device="cuda", **settings)


EXACT = {"matmul_tf32": False, "cudnn_tf32": False, "precision": "highest", "cudnn_deterministic": True,
         "benchmark": False, "deterministic": True, "cublas": ":4096:8"}
DEFAULT = EXACT | {"cudnn_tf32": True, "cudnn_deterministic": False, "deterministic": False}


def test_an_exact_trial_trains_in_ieee_fp32_with_deterministic_kernels_and_the_next_trial_does_not(
        tmp_path, monkeypatch):
    seen = _spy_training(monkeypatch)
    with fake_cuda():
        exact = run_trial(_small(exact=True, pruner="threshold"), Workdirs(tmp_path), progress=False)
        during_exact = list(seen)
        seen.clear()
        default = run_trial(_small(pruner="threshold"), Workdirs(tmp_path), progress=False)
    assert [r["status"] for r in exact + default] == ["ok", "ok"]
    assert during_exact and all(s == EXACT for s in during_exact)
    # The same worker, the next trial: PyTorch's defaults again, whatever ran before.
    assert seen and all(s == DEFAULT for s in seen)
    assert exact[0]["exact"] is True and default[0]["exact"] is False
    assert exact[0]["tf32_allowed"] is False and default[0]["tf32_allowed"] is True


def test_a_pack_trains_in_its_members_mode(tmp_path, monkeypatch):
    from prunerlib import population

    seen = []
    real = population.train_population
    monkeypatch.setattr(population, "train_population",
                        lambda *a, **k: seen.append(_numerics()) or real(*a, **k))
    cfgs = [_small(exact=True, pruner="threshold", threshold_factor=f) for f in (0.5, 1.0)]
    with fake_cuda():
        rows = run_pack(cfgs, Workdirs(tmp_path))
    assert {r["status"] for member in rows for r in member} == {"ok"}
    assert seen and all(s == {k: v for k, v in EXACT.items() if k != "cublas"} for s in seen)
    assert {r["tf32_allowed"] for member in rows for r in member} == {False}


def test_exact_is_refused_in_one_line_when_cuda_started_without_the_cublas_setting(tmp_path, monkeypatch):
    with fake_cuda():
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        with pytest.raises(ConfigError, match=r"^exact: .*CUBLAS_WORKSPACE_CONFIG=:4096:8"):
            run_trial(_small(exact=True), Workdirs(tmp_path), progress=False)
        # Without exact nothing depends on it: the trial runs, and sets it for later trials.
        assert run_trial(_small(), Workdirs(tmp_path), progress=False)[0]["status"] == "ok"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_rows_name_the_gpu_and_its_software_stack_and_are_null_on_the_cpu(tmp_path):
    with fake_cuda():
        single = run_trial(_small(pruner="threshold"), Workdirs(tmp_path), progress=False)
        packed = run_pack([_small(pruner="threshold", threshold_factor=f) for f in (0.5, 1.0)], Workdirs(tmp_path))
    for row in single + packed[0] + packed[1]:
        assert row["status"] == "ok"
        assert {k: row[k] for k in GPU_COLUMNS} == {
            "gpu_name": fake.NAME, "cuda_driver": fake.DRIVER, "cuda_version": fake.CUDA_VERSION,
            "cudnn_version": str(fake.CUDNN_VERSION), "tf32_allowed": True}
    cpu = run_trial(ffn_config(device="cpu", epochs_finetune=1), Workdirs(tmp_path), progress=False)[0]
    assert cpu["device"] == "cpu" and all(cpu[k] is None for k in GPU_COLUMNS)


def test_exact_is_a_setting_of_its_own_result_and_pretrained_model():
    base = ffn_config()
    assert base.exact is False
    assert base.replace(exact=True).config_hash() != base.config_hash()
    assert base.replace(exact=True).pretrain_key() != base.pretrain_key()
    with pytest.raises(ConfigError, match="^exact: expected bool"):
        TrialConfig.from_dict({"exact": "yes"})


def test_a_fractional_gpu_pack_caps_its_process_at_its_share(tmp_path):
    cfgs = [_small(pruner="threshold", threshold_factor=f) for f in (0.5, 1.0)]
    with fake_cuda() as gpu:
        run_pack(cfgs, Workdirs(tmp_path), gpu_share=0.25)
        assert gpu.memory_fraction == 0.25
        run_pack(cfgs, Workdirs(tmp_path))  # the next pack in a reused worker gets the whole card back
        assert gpu.memory_fraction == 1.0
