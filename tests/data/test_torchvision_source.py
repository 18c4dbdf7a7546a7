"""``data.source: torchvision`` on files a test can write (torchvision's MNIST raw idx layout), and its refusals."""

from pathlib import Path

import numpy as np
import pytest

from clsp.config import DataConfig, config_from_dict
from clsp.data import load_images
from clsp.errors import ClspError
from tests.data.test_mnist import write_split


def test_mnist_by_name_reads_torchvision_s_raw_layout(tmp_path: Path) -> None:
    truth = {
        split: write_split(tmp_path / "MNIST" / "raw", split, n, seed, gz=False)
        for split, n, seed in (("train", 12, 0), ("test", 5, 1))
    }
    cfg = DataConfig(source="torchvision", dataset="MNIST", root=tmp_path, channels=1)
    for split, (images, labels) in truth.items():
        got = load_images(cfg, split)
        assert got.name == f"torchvision:MNIST/{split}" and got.images.shape == (len(images), 28, 28, 1)
        np.testing.assert_array_equal(got.images[..., 0], images)
        np.testing.assert_array_equal(got.labels, labels)
        assert got.class_names[3] == "3 - three"
    rgb = load_images(cfg.model_copy(update={"channels": None, "image_size": 14}), "test")  # the folder rules
    assert rgb.images.shape == (5, 14, 14, 3) and (rgb.images[..., 0] == rgb.images[..., 2]).all()


def test_a_cached_split_opens_no_dataset(tmp_path: Path, monkeypatch) -> None:
    from clsp.data import torchvision_source

    write_split(tmp_path / "MNIST" / "raw", "train", 4, 1, gz=False)  # torchvision checks that both splits are there
    images, _ = write_split(tmp_path / "MNIST" / "raw", "test", 6, 2, gz=False)
    cfg = DataConfig(source="torchvision", dataset="MNIST", root=tmp_path, channels=1, cache_dir=tmp_path / "cache")
    built = load_images(cfg, "test")

    def refuse(*args: object) -> None:
        raise AssertionError("opened the dataset although its split is cached")

    monkeypatch.setattr(torchvision_source, "open_torchvision_dataset", refuse)
    again = load_images(cfg, "test")
    assert again.fingerprint == built.fingerprint and again.class_names == built.class_names
    np.testing.assert_array_equal(np.asarray(again.images)[..., 0], images)
    with pytest.raises(AssertionError, match="opened the dataset"):  # another split is not cached
        load_images(cfg.model_copy(update={"image_size": 14}), "test")


def test_missing_files_are_one_line_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ClspError) as caught:
        load_images(DataConfig(source="torchvision", dataset="SVHN", root=tmp_path), "train")
    message = str(caught.value)
    assert "torchvision.datasets.SVHN(split='train', download=False) cannot read its files" in message
    assert "pass --download" in message and "\n" not in message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dataset": "Imagenette"}, r"dataset 'Imagenette': not supported; supported: MNIST, FashionMNIST"),
        ({"dataset": "CIFAR10"}, r"use source: cifar10 \(clsp's own reader; torchvision's unpickles\)"),
        ({}, "source torchvision needs dataset"),
        (
            {"dataset": "MNIST", "test_split": "val"},
            r"test_split 'val' is not a split of torchvision MNIST; use one of \['train', 'test'\]",
        ),
        ({"dataset": "Caltech101", "test_split": "all"}, r"'all' holds the test images too"),
    ],
)
def test_unknown_classes_and_splits_are_refused_on_load(data: dict, message: str) -> None:
    with pytest.raises(ClspError, match=message):
        config_from_dict({"data": {"source": "torchvision", "root": "x", **data}})
    assert DataConfig(source="torchvision", dataset="Caltech101", root=Path("x")).splits == ("train", "test", "all")


def test_docs_list_every_supported_class_with_its_splits() -> None:
    from clsp.config import TORCHVISION_SPLITS

    docs = (Path(__file__).parents[2] / "docs" / "data.md").read_text().splitlines()
    rows = {line.split("`")[1]: line for line in docs if line.startswith("| `")}
    for name, mapping in TORCHVISION_SPLITS.items():
        if mapping is None:
            assert "class-stratified" in rows[name]
        for split, arguments in (mapping or {}).items():
            spelled = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
            assert f"`{split}` = `{spelled}`" in rows[name]
