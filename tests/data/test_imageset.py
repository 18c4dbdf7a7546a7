import numpy as np
import pytest
from PIL import Image

from clsp.data.imageset import ImageSet, resize_images


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


def test_resize_matches_pil_and_centre_crops() -> None:
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (1, 6, 6, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8)  # 48x48 blocks
    ours = resize_images(smooth, 24)
    pil = np.asarray(Image.fromarray(smooth[0]).resize((24, 24), Image.Resampling.BILINEAR))
    assert np.abs(ours[0].astype(int) - pil.astype(int)).mean() < 2.0
    wide = np.zeros((1, 20, 40, 1), dtype=np.uint8)
    wide[:, :, 10:30] = 255  # the middle half is white; a centre crop to a square keeps only it
    square = resize_images(wide, 10)
    assert square[:, :, 1:-1].min() == 255 and square.min() > 128  # only the antialiasing filter sees the black
    assert resize_images(smooth, 48) is smooth


def test_pixel_statistics_in_chunks_match_numpy_in_float64(monkeypatch) -> None:
    from clsp.data import imageset

    images = np.random.default_rng(7).integers(0, 256, (37, 5, 6, 3), dtype=np.uint8)
    flat = images.reshape(-1, 3).astype(np.float64) / 255
    mean, std = imageset.pixel_statistics(images)  # one chunk: numpy's own reductions, bit for bit
    assert mean.tolist() == flat.mean(0).tolist() and std.tolist() == flat.std(0).tolist()
    monkeypatch.setattr(imageset, "STATS_CHUNK_PIXELS", 64)  # 2 images per chunk
    mean, std = imageset.pixel_statistics(images)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-13)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-13)
