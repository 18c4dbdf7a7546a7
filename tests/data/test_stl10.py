"""STL-10 reader against small files in torchvision's binary layout, read back by torchvision too."""

from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import STL10

from clsp.data.stl10 import load_stl10_split
from clsp.errors import ClspError


class TorchvisionSTL10(STL10):
    """torchvision's reader, with the official archive's MD5 sums dropped so our small files pass its check."""

    train_list = [[name, None] for name, _ in STL10.train_list]
    test_list = [[name, None] for name, _ in STL10.test_list]


def write_stl10(root: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Write random images as the official binaries do: uint8, [N, C, W, H] (column-major) per file."""
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


def test_reads_what_torchvision_reads(tmp_path: Path) -> None:
    truth = write_stl10(tmp_path, {"train": 5, "test": 4, "unlabeled": 3})
    for split in ("train", "test", "unlabeled"):
        ours = load_stl10_split(tmp_path, split)
        theirs = TorchvisionSTL10(str(tmp_path), split=split)
        np.testing.assert_array_equal(ours.images, truth[split])
        np.testing.assert_array_equal(ours.images, theirs.data.transpose(0, 2, 3, 1))
        if split == "unlabeled":
            assert ours.labels is None
        else:
            np.testing.assert_array_equal(ours.labels, theirs.labels)
            assert ours.labels.min() >= 0 and ours.labels.max() <= 9
        assert ours.class_names == tuple(f"class{i}" for i in range(10))


def test_truncated_images_file(tmp_path: Path) -> None:
    write_stl10(tmp_path, {"test": 2})
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ClspError, match="test_X.bin: .* truncated"):
        load_stl10_split(tmp_path, "test")


def test_label_count_mismatch(tmp_path: Path) -> None:
    write_stl10(tmp_path, {"train": 3})
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(ClspError, match="train_y.bin: expected 3 labels"):
        load_stl10_split(tmp_path, "train")


def test_missing_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(ClspError) as caught:
        load_stl10_split(tmp_path, "unlabeled")
    assert str(tmp_path / "stl10_binary" / "unlabeled_X.bin") in str(caught.value)
    assert "--download" in str(caught.value)
