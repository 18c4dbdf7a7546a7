import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Two cores are shared by torch, ONNX Runtime and subprocesses: spinning OpenMP threads slow everything.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test` runs two workers on the two cores: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch) -> None:
    """rich sizes clsp's console once, from COLUMNS (80 without a terminal), whichever test imports it first: wide
    enough here that no in-process command's table cuts a tmp path (longer under pytest-xdist)."""
    from clsp import progress

    monkeypatch.setattr(progress.console, "width", 1000)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


def write_stl10(root: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Write random 96x96 images into ``root/stl10_binary`` as the official binaries do (uint8, [N, C, W, H],
    column-major, per ``{split}_X.bin``; labels 1-10 in ``{split}_y.bin``) and return them as ``[N, H, W, C]``."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    truth = {}
    for split, n in sizes.items():
        images = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        images.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        truth[split] = images
        if split != "unlabeled":
            rng.integers(1, 11, n, dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    (folder / "fold_indices.txt").write_text(" ".join(str(i) for i in range(sizes.get("train", 0))) + "\n")
    return truth


@pytest.fixture
def stl10_writer():
    """``stl10_writer(root, {split: n}, seed=0)``: a small STL-10 folder in the real binary layout; see
    :func:`write_stl10`."""
    return write_stl10
