"""ImageRows against numpy on fresh random arrays: indexing, subsets and resizing as the eager forms compute them,
a mapped file read back exactly, pickled as its path, and a walk over it that keeps the resident set near a batch."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from clsp.data import pixels
from clsp.data.pixels import pixel_statistics, resize_images
from clsp.data.rows import ImageRows, as_rows, map_npy


def random_images(n: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_indexing_a_subset_and_a_resize_give_what_numpy_and_resize_images_give() -> None:
    images = random_images(40, 12, seed=np.random.SeedSequence().entropy % 2**32)
    rows = np.random.default_rng(1).permutation(40)[:25]
    picked = as_rows(images).select(rows)
    np.testing.assert_array_equal(picked[:], images[rows])
    np.testing.assert_array_equal(picked[3], images[rows[3]])
    np.testing.assert_array_equal(picked[np.int64(4)], images[rows[4]])
    np.testing.assert_array_equal(picked[2:9:3], images[rows[2:9:3]])
    np.testing.assert_array_equal(picked[torch.tensor([5, 0, 5])], images[rows[[5, 0, 5]]])
    np.testing.assert_array_equal(picked.select(np.array([1, 2]))[:], images[rows[[1, 2]]])
    resized = picked.resized(7)
    assert resized.shape == (25, 7, 7, 3) and len(resized) == 25 and resized.nbytes == 25 * 7 * 7 * 3
    expected = resize_images(images[rows], 7)
    np.testing.assert_array_equal(resized[:], expected)  # batch by batch = all at once
    np.testing.assert_array_equal(resize_images(images[rows], 7, chunk=4), expected)
    np.testing.assert_array_equal(resized[[10, 2]], expected[[10, 2]])
    np.testing.assert_array_equal(resized.resized(9)[:], resize_images(images[rows], 9))  # from the source
    assert resized.resized(12)[:].shape == (25, 12, 12, 3) and picked.resized(12) is picked
    out = as_rows(images)[0:2]
    out[:] = 0  # a copy
    assert images[0:2].any()
    with pytest.raises(TypeError, match="1-D integer array"):
        picked[np.zeros((2, 2), np.int64)]


def test_a_mapped_file_reads_back_exactly_and_pickles_as_its_path(tmp_path: Path) -> None:
    images = random_images(30, 9, channels=1, seed=2)
    np.save(tmp_path / "images.npy", images)
    mapped = ImageRows.open(tmp_path / "images.npy")
    assert mapped.shape == images.shape and mapped.path == tmp_path / "images.npy"
    np.testing.assert_array_equal(np.asarray(mapped), images)
    subset = mapped.select(np.array([4, 1])).resized(5)
    data = pickle.dumps(subset)
    assert len(data) < images.nbytes / 4  # the path, not the pixels
    np.testing.assert_array_equal(pickle.loads(data)[:], subset[:])
    in_memory = as_rows(images).select(np.array([3]))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(in_memory))[:], images[[3]])


def test_a_truncated_or_foreign_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "images.npy", random_images(4, 6))
    data = (tmp_path / "images.npy").read_bytes()
    (tmp_path / "images.npy").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="its header says"):
        map_npy(tmp_path / "images.npy")
    np.save(tmp_path / "floats.npy", np.zeros((2, 3, 3, 1), np.float32))
    np.save(tmp_path / "images.npy", random_images(4, 6))
    with open(tmp_path / "images.npy", "ab") as f:
        f.write(b"extra")
    with pytest.raises(ValueError, match="its header says"):
        map_npy(tmp_path / "images.npy")
    with pytest.raises(ValueError, match="not uint8"):
        map_npy(tmp_path / "floats.npy")


def resident_file_bytes() -> int:
    """This process's resident pages that belong to mapped files (``RssFile``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def walk_statistics(images: ImageRows) -> None:
    pixel_statistics(images)  # what `clsp data show` computes, 1 MB a chunk here


def walk_features(images: ImageRows) -> None:
    from clsp.features import extract_features

    extract_features(lambda x: x.mean((2, 3)), images, (0.5,) * 3, (0.25,) * 3, batch_size=64)  # `clsp eval`


def walk_epoch(images: ImageRows) -> None:
    from clsp.config import AugmentConfig
    from clsp.contrastive.views import MultiViewDataset
    from clsp.data.augment import Augmentation

    augmentation = Augmentation(AugmentConfig(), 64, (0.5,) * 3, (0.25,) * 3)
    dataset = MultiViewDataset(images, None, augmentation, seed=0)  # an SSL epoch's reads
    for i in range(len(dataset)):
        dataset[(0, i)]


@pytest.mark.parametrize("walk", [walk_statistics, walk_features, walk_epoch])
def test_walking_a_mapped_split_keeps_the_resident_set_near_a_batch_not_the_split(
    tmp_path: Path, monkeypatch, walk
) -> None:
    images = random_images(3000, 64, seed=3)  # 36.9 MB, many release windows
    np.save(tmp_path / "images.npy", images)
    monkeypatch.setattr(pixels, "STATS_CHUNK_PIXELS", 64 * 64 * 80)
    walk(as_rows(images[:200]))  # first calls map in library code: that is not the data's
    mapped, peak = ImageRows.open(tmp_path / "images.npy"), [0]
    release = ImageRows._release

    def sampled(self: ImageRows, rows: np.ndarray) -> None:
        peak[0] = max(peak[0], resident_file_bytes() - before)  # what a read left mapped, before its release
        release(self, rows)

    monkeypatch.setattr(ImageRows, "_release", sampled)
    before = resident_file_bytes()
    walk(mapped)
    assert 0 < peak[0] < 8 << 20, peak  # a batch and the windows around it, not the 36.9 MB split
    # the same walk over numpy's own map keeps every page it touched
    plain, start = np.load(tmp_path / "images.npy", mmap_mode="r"), resident_file_bytes()
    walk(as_rows(plain))
    assert resident_file_bytes() - start > 30 << 20


def test_statistics_of_a_mapped_split_are_numpy_s(tmp_path: Path, monkeypatch) -> None:
    images = random_images(500, 16, seed=4)
    np.save(tmp_path / "images.npy", images)
    monkeypatch.setattr(pixels, "STATS_CHUNK_PIXELS", 16 * 16 * 7)
    mean, std = pixel_statistics(ImageRows.open(tmp_path / "images.npy"))
    flat = images.reshape(-1, 3) / 255
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-12)
