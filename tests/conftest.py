from pathlib import Path

import pytest
import torch

CATSDOGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "catsdogs"


@pytest.fixture
def catsdogs_dir() -> Path:
    if not CATSDOGS.is_dir():
        pytest.skip(f"{CATSDOGS} not found: the real Dogs vs. Cats photos live in ../shared, outside the repo")
    return CATSDOGS


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models run fastest on one thread, and the suite shares 2 cores with CI.
    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "fake_cuda: runs the CUDA path on the fake CUDA device of tests/fake_cuda.py")
