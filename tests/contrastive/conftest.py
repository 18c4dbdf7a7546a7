from pathlib import Path

import numpy as np
import pytest

from clsp.config import Config, load_config
from clsp.data import load_images
from clsp.positives.store import PositiveStore

# A small, fast variant of the digits demo: 180 training images, batch 32 (5 steps per epoch), tiny heads.
FAST = [
    "data.test_fraction=0.9",
    "ssl.batch_size=32",
    "ssl.epochs=3",
    "ssl.warmup_epochs=1",
    "ssl.num_workers=0",
    "ssl.projector_hidden_dim=64",
    "ssl.projector_dim=32",
    "ssl.queue_size=64",
    "ssl.nnclr_support_size=64",
    "ssl.num_candidates=2",
]


def build_store(cfg: Config, path: Path, n: int | None = None, k: int = 2) -> PositiveStore:
    """A complete positive store for ``cfg``'s training split whose candidates are the real images shifted by 1..k pixels
    the real images (real diffusion positives are far too slow for unit tests)."""
    images = load_images(cfg.data, cfg.data.train_split)
    n = len(images) if n is None else n
    real = images.images[:n]
    candidates = np.stack([np.roll(real, shift=j + 1, axis=2) for j in range(k)], axis=1)
    return PositiveStore.from_array(
        candidates, path, dataset_fingerprint=images.fingerprint, provenance={"made_by": "tests"}, shard_size=64
    )


@pytest.fixture
def make_store():
    """``make_store(cfg, path, n=None, k=2)``: see :func:`build_store`."""
    return build_store


@pytest.fixture
def fast_overrides(tmp_path) -> list[str]:
    """:data:`FAST` plus an output folder and the positive store folder in tmp_path."""
    return [*FAST, f"run.output_dir={tmp_path / 'run'}", f"ssl.positives={tmp_path / 'positives'}"]


@pytest.fixture
def fast_config(fast_overrides, tmp_path, repo_root):
    """``fast_config(*overrides)`` -> the digits config with ``fast_overrides`` and ``overrides``; the first call
    also writes a matching positive store at ``tmp_path / "positives"``."""

    def make(*overrides: str) -> Config:
        cfg = load_config(repo_root / "configs" / "digits.yaml", [*fast_overrides, *overrides])
        if not (tmp_path / "positives" / "manifest.json").exists():
            build_store(cfg, tmp_path / "positives")
        return cfg

    return make
