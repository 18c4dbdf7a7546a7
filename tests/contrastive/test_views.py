"""The multi-view dataset and the global batch sampler (method.md 3.1)."""

import numpy as np
import pytest
import torch

from clsp.config import AugmentConfig
from clsp.contrastive.views import MultiViewDataset, open_positives
from clsp.data.augment import Augmentation
from clsp.errors import ClspError
from clsp.positives.store import PositiveStore

N, K = 20, 4
# No colour changes and a full-size crop: pixel values survive, so v3 reveals which candidate was drawn.
PLAIN = AugmentConfig(crop_scale=(1.0, 1.0), color_jitter_p=0.0, grayscale_p=0.0, hflip_p=0.0)


@pytest.fixture
def store(tmp_path):
    """Candidate j of every image is a constant image of value 10 * (j + 1)."""
    s = PositiveStore.create(
        tmp_path / "pos", n=N, num_candidates=K, image_shape=(8, 8, 1), dataset_fingerprint="fp",
        provenance={}, shard_size=8,
    )  # fmt: skip
    values = np.arange(1, K + 1, dtype=np.uint8) * 10
    for index in s.missing_shards():
        rows = len(s.shard_rows(index))
        s.write_shard(index, np.broadcast_to(values[None, :, None, None, None], (rows, K, 8, 8, 1)).copy())
    return s


def dataset(store, third_view="synthetic", num_candidates=K):
    images = np.full((N, 12, 12, 1), 200, dtype=np.uint8)
    augmentation = Augmentation(PLAIN, 12, (0.0,), (1 / 255,))  # back to 0..255 values
    labels = np.arange(N) % 3
    return MultiViewDataset(images, labels, augmentation, 7, third_view, store, num_candidates)


def batch(ds, *keys):
    return ds.collate([ds[key] for key in keys])


def drawn_candidate(ds, key) -> int:
    return round(batch(ds, key)["v3"].mean().item() / 10) - 1


def test_synthetic_candidate_is_uniform_among_the_first_num_candidates(store):
    ds = dataset(store, num_candidates=3)
    draws = [drawn_candidate(ds, (epoch, 5)) for epoch in range(300)]
    counts = np.bincount(draws, minlength=K)
    assert counts[3] == 0 and counts[:3].min() > 70  # ~100 each
    views = batch(ds, (0, 5), (0, 4))
    assert views["v1"].shape == (2, 1, 12, 12) and views["v3"].shape == (2, 1, 12, 12)
    assert views["label"].tolist() == [2, 1]


def test_items_repeat_per_key_and_differ_across_epochs(store):
    full = MultiViewDataset(
        np.random.default_rng(0).integers(0, 256, (N, 12, 12, 1), dtype=np.uint8), None,
        Augmentation(AugmentConfig(), 12, (0.5,), (0.5,)), 7, "synthetic", store, K,
    )  # fmt: skip
    a, b, c = batch(full, (0, 3)), batch(full, (0, 3)), batch(full, (1, 3))
    assert all(torch.equal(a[k], b[k]) for k in ("v1", "v2", "v3"))
    assert not torch.equal(a["v1"], c["v1"]) and not torch.equal(a["v1"], a["v2"])
    assert a["label"].tolist() == [-1]
    together = batch(full, (1, 3), (0, 3), (0, 9))  # an item's views do not depend on its batch
    assert all(torch.equal(together[k][1:2], a[k]) for k in ("v1", "v2", "v3"))


def test_real_ablation_and_baseline_views(store):
    assert drawn_candidate(dataset(store, "real"), (0, 0)) == 19  # 200 / 10 - 1: the real image
    assert "v3" not in batch(dataset(None, "none"), (0, 0))


def test_store_checks(store, tmp_path):
    assert open_positives(store.root, N, 1, "fp", "digits").num_candidates == K
    with pytest.raises(ClspError, match="N 20"):
        open_positives(store.root, N + 1, 1, "fp", "digits")
    with pytest.raises(ClspError, match="fingerprint"):
        open_positives(store.root, N, 1, "other", "digits")
    with pytest.raises(ClspError, match="channels"):
        open_positives(store.root, N, 3, "fp", "cifar10")
    with pytest.raises(ClspError, match="clsp positives generate"):
        open_positives(tmp_path / "missing", N, 1, "fp", "digits")


def test_a_shard_with_a_flipped_byte_is_refused(store):
    shard = store.root / "shard_00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0x01  # same size, same header: only the hash tells
    shard.write_bytes(bytes(raw))
    with pytest.raises(ClspError) as caught:
        open_positives(store.root, N, 1, "fp", "digits")
    message = str(caught.value)
    assert message.startswith(f"{shard}: SHA-256 differs from the manifest")
    assert f"clsp positives verify {store.root}" in message and "generate again" in message
