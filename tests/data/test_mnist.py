"""Fashion-MNIST / MNIST idx reader against hand-written idx files, and once against Debian's real files."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from clsp.config import DataConfig, load_config
from clsp.data import load_images, load_training_images
from clsp.data.mnist import FILES, LAYOUT, load_mnist_split
from clsp.errors import ClspError

DEBIAN_ROOT = LAYOUT["fashion_mnist"]["debian_root"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file written from the format's definition: 0, 0, type 0x08 (ubyte), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(folder: Path, split: str, n: int, seed: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FILES[split], (images, labels), strict=True):
        raw = idx_bytes(array)
        (folder / (name + ".gz" * gz)).write_bytes(gzip.compress(raw) if gz else raw)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_reads_hand_written_idx_files_gzipped_or_raw(tmp_path: Path, gz: bool) -> None:
    truth = {split: write_split(tmp_path, split, n, seed, gz) for split, n, seed in (("train", 30, 0), ("test", 7, 1))}
    for split, (images, labels) in truth.items():
        got = load_images(DataConfig(source="fashion_mnist", root=tmp_path), split)
        assert got.name == f"fashion_mnist/{split}" and got.images.shape == (len(images), 28, 28, 1)
        np.testing.assert_array_equal(got.images[..., 0], images)
        np.testing.assert_array_equal(got.labels, labels)
        assert got.class_names[0] == "T-shirt/top" and got.class_names[9] == "Ankle boot"
        assert got.images.flags.writeable  # torch.from_numpy of a read-only buffer warns


def test_torchvision_layout_and_the_mnist_source(tmp_path: Path) -> None:
    images, labels = write_split(tmp_path / "MNIST" / "raw", "test", 5, 2, gz=False)
    got = load_mnist_split("mnist", tmp_path, "test")
    np.testing.assert_array_equal(got.images[..., 0], images)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.class_names == tuple("0123456789")
    write_split(tmp_path / "FashionMNIST" / "raw", "train", 4, 3, gz=True)
    assert len(load_mnist_split("fashion_mnist", tmp_path, "train")) == 4


def one_line_error(tmp_path: Path, split: str = "train") -> str:
    with pytest.raises(ClspError) as err:
        load_mnist_split("fashion_mnist", tmp_path, split)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    message = one_line_error(tmp_path)
    assert "dataset-fashion-mnist" in message and "FashionMNIST/raw" in message and str(tmp_path) in message

    images_name, labels_name = FILES["train"]
    write_split(tmp_path, "train", 6, 0, gz=False)
    image_file = tmp_path / images_name
    good = image_file.read_bytes()
    image_file.write_bytes(b"\x00\x00\x08\x01" + good[4:])  # a labels magic number on the images file
    assert "magic 00000801, expected 00000803" in one_line_error(tmp_path)
    image_file.write_bytes(good[:-100])
    assert "truncated" in one_line_error(tmp_path)
    image_file.write_bytes(good[:10])
    assert "not an idx file" in one_line_error(tmp_path)
    image_file.write_bytes(gzip.compress(good)[:30])
    assert "cannot be read as an idx file" in one_line_error(tmp_path)
    image_file.write_bytes(good)
    (tmp_path / labels_name).write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    assert "6 images but" in one_line_error(tmp_path) and "5 labels" in one_line_error(tmp_path)
    (tmp_path / labels_name).write_bytes(idx_bytes(np.full(6, 10, np.uint8)))
    assert "label 10" in one_line_error(tmp_path)


def test_train_subset_is_stratified_and_fixed(tmp_path: Path) -> None:
    _, labels = write_split(tmp_path, "train", 200, 4, gz=False)
    cfg = DataConfig(source="fashion_mnist", root=tmp_path, train_subset=50)
    subset = load_training_images(cfg)
    assert len(subset) == 50 and subset.name == "fashion_mnist/train[50 of 200]"
    full = load_images(cfg, "train")
    rows = [int(np.flatnonzero((full.images == img).all(axis=(1, 2, 3)))[0]) for img in subset.images]
    assert rows == sorted(rows)  # dataset order kept
    share = np.bincount(subset.labels, minlength=10) / 50
    assert np.abs(share - np.bincount(labels, minlength=10) / 200).max() <= 0.021  # stratified: within one image
    assert load_training_images(cfg).fingerprint == subset.fingerprint
    assert len(load_training_images(DataConfig(source="fashion_mnist", root=tmp_path))) == 200


@pytest.mark.skipif(not DEBIAN_ROOT.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_fashion_mnist_files() -> None:
    cfg = load_config(REPO_ROOT / "configs" / "fashion_mnist.yaml").data
    assert cfg.root is None  # the default root: Debian's folder
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert (np.bincount(train.labels) == 6000).all() and (np.bincount(test.labels) == 1000).all()
    assert 70 < train.images.mean() < 76  # Fashion-MNIST's mean pixel is 72.9 of 255
    assert len(load_training_images(cfg)) == cfg.train_subset == 10000
