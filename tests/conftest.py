import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Two cores are shared by torch, ONNX Runtime and subprocesses: spinning OpenMP threads slow everything.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
