"""The splits of an image folder on real PNG files: detected sub-folders, per-split roots, the stratified split of
one folder, and the refusals (a test split that is the training images, a class missing from a split)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clsp.config import DataConfig
from clsp.data import load_images
from clsp.errors import ClspError


def make_split(root: Path, counts: dict[str, int], shade: int = 0) -> None:
    """``counts[c]`` 6x6 PNGs in ``root/c``; every file's pixels differ (value = running index + ``shade``)."""
    index = shade
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("L", (6, 6), index % 256).save(root / name / f"{i:03d}.png")
            index += 1


def test_train_and_val_sub_folders_are_the_splits_and_are_reported(tmp_path: Path, capsys) -> None:
    make_split(tmp_path / "train", {"cat": 3, "dog": 2})
    make_split(tmp_path / "val", {"dog": 1, "cat": 1}, shade=100)
    cfg = DataConfig(source="folder", root=tmp_path, channels=1)
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    assert (len(train), len(test)) == (5, 2)
    assert train.class_names == test.class_names == ("cat", "dog")
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and test.labels.tolist() == [0, 1]
    assert test.files == ("cat/000.png", "dog/000.png") and test.images[:, 0, 0, 0].tolist() == [101, 100]
    assert capsys.readouterr().err.count("split sub-folders: train = train/, val = val/, test = val/") == 1
    (tmp_path / "val").rename(tmp_path / "test")
    with pytest.raises(ClspError, match=r"no 'val' split \(it has: train, test\).*add a val/ sub-folder"):
        load_images(cfg.model_copy(update={"labeled_split": "val"}), "val")


def test_per_split_roots_share_one_class_list(tmp_path: Path) -> None:
    make_split(tmp_path / "a", {"x": 1, "y": 1, "z": 1})
    make_split(tmp_path / "b", {"z": 2, "x": 1})
    cfg = DataConfig(source="folder", roots={"train": tmp_path / "a", "test": tmp_path / "b"})
    with pytest.raises(ClspError, match=r"data.roots.test '.*b' has no images of class 'y', which other splits have"):
        load_images(cfg, "train")  # any split: the class list is every split's
    make_split(tmp_path / "b", {"y": 1})
    assert load_images(cfg, "test").labels.tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("test_root", [".", "a", "a/y"])
def test_a_test_split_inside_the_training_images_is_refused(tmp_path: Path, test_root: str) -> None:
    make_split(tmp_path / "a", {"x": 2, "y": 2})
    cfg = DataConfig(source="folder", roots={"train": tmp_path / "a", "test": tmp_path / test_root})
    with pytest.raises(ClspError, match="read the same images .* scored on images it trained on") as caught:
        load_images(cfg, "test")
    assert "\n" not in str(caught.value)


def test_a_one_split_labelled_folder_is_split_stratified_by_the_seed(tmp_path: Path) -> None:
    make_split(tmp_path, {"a": 8, "b": 12})
    cfg = DataConfig(source="folder", root=tmp_path, channels=1, test_fraction=0.25)
    train, test, every = (load_images(cfg, split) for split in ("train", "test", "all"))
    assert set(train.files).isdisjoint(test.files) and sorted(train.files + test.files) == list(every.files)
    assert np.bincount(test.labels).tolist() == [2, 3]  # a quarter of each class
    for images in (train, test):  # each row's label is its file's folder
        assert [every.class_names[label] for label in images.labels] == [f.split("/")[0] for f in images.files]
    again = load_images(cfg, "test")
    other = load_images(cfg.model_copy(update={"split_seed": 1}), "test")
    assert again.files == test.files and other.files != test.files
    np.testing.assert_array_equal(again.images, test.images)


def test_too_few_images_to_split_is_one_line_and_an_unlabelled_folder_splits_at_random(tmp_path: Path) -> None:
    make_split(tmp_path / "labelled", {"a": 5, "b": 1})
    with pytest.raises(ClspError, match="class 'b' has 1 image.*too few to split"):
        load_images(DataConfig(source="folder", root=tmp_path / "labelled"), "test")
    (tmp_path / "plain").mkdir()
    for i in range(8):
        Image.new("L", (6, 6), i).save(tmp_path / "plain" / f"{i}.png")
    cfg = DataConfig(source="folder", root=tmp_path / "plain")
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    assert (len(train), len(test), train.labels, test.labels) == (6, 2, None, None)
    assert sorted(train.files + test.files) == [f"{i}.png" for i in range(8)]
