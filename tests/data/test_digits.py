import numpy as np
from sklearn.datasets import load_digits

from clsp.config import DataConfig
from clsp.data import load_images


def test_shapes_labels_and_stratified_split() -> None:
    cfg = DataConfig()
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    assert train.images.shape == (1347, 16, 16, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (450, 16, 16, 1)
    assert train.class_names == tuple("0123456789")
    all_labels = load_digits().target
    for split in (train, test):
        share = np.bincount(split.labels, minlength=10) / len(split)
        np.testing.assert_allclose(share, np.bincount(all_labels) / len(all_labels), atol=0.01)


def test_native_pixels_match_scikit_learn() -> None:
    """At 8x8 nothing is resized, so train + test are exactly the bundled images scaled 0..16 -> 0..255."""
    cfg = DataConfig(image_size=8)
    ours = np.concatenate([load_images(cfg, s).images[..., 0] for s in ("train", "test")]).astype(np.int64)
    expected = np.round(load_digits().images * 255 / 16).astype(np.int64)
    ours_sorted = sorted(map(bytes, ours.astype(np.uint8).reshape(len(ours), -1)))
    expected_sorted = sorted(map(bytes, expected.astype(np.uint8).reshape(len(expected), -1)))
    assert ours_sorted == expected_sorted


def test_split_is_reproducible_and_seeded() -> None:
    first = load_images(DataConfig(), "train")
    again = load_images(DataConfig(), "train")
    assert first.fingerprint == again.fingerprint
    np.testing.assert_array_equal(first.images, again.images)
    other_seed = load_images(DataConfig(split_seed=1), "train")
    assert other_seed.fingerprint != first.fingerprint
    assert len(other_seed) == len(first)


def test_image_size_is_configurable() -> None:
    images = load_images(DataConfig(image_size=32), "test")
    assert images.images.shape == (450, 32, 32, 1)
