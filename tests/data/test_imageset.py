import numpy as np
import pytest

from clsp.data.imageset import ImageSet


def test_fingerprint_depends_on_content_only() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    labels = np.arange(4)
    base = ImageSet("a", images, labels)
    assert ImageSet("renamed", images.copy(), labels.copy()).fingerprint == base.fingerprint
    changed = images.copy()
    changed[2, 1, 1, 0] ^= 1
    assert ImageSet("a", changed, labels).fingerprint != base.fingerprint
    assert ImageSet("a", images, labels[::-1].copy()).fingerprint != base.fingerprint
    assert ImageSet("a", images, None).fingerprint != base.fingerprint
    assert ImageSet("a", images.reshape(4, 5, 15, 1)).fingerprint != ImageSet("a", images).fingerprint


def test_rejects_wrong_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageSet("bad", np.zeros((2, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="labels"):
        ImageSet("bad", np.zeros((2, 4, 4, 3), dtype=np.uint8), np.zeros(3, dtype=np.int64))
