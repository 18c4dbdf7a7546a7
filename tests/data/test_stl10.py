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


def test_reads_what_torchvision_reads(tmp_path: Path, stl10_writer) -> None:
    truth = stl10_writer(tmp_path, {"train": 5, "test": 4, "unlabeled": 3})
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


def test_truncated_images_file(tmp_path: Path, stl10_writer) -> None:
    stl10_writer(tmp_path, {"test": 2})
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ClspError, match="test_X.bin: .* truncated"):
        load_stl10_split(tmp_path, "test")


def test_label_count_mismatch(tmp_path: Path, stl10_writer) -> None:
    stl10_writer(tmp_path, {"train": 3})
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(ClspError, match="train_y.bin: expected 3 labels"):
        load_stl10_split(tmp_path, "train")


def test_missing_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(ClspError) as caught:
        load_stl10_split(tmp_path, "unlabeled")
    assert str(tmp_path / "stl10_binary" / "unlabeled_X.bin") in str(caught.value)
    assert "--download" in str(caught.value)
