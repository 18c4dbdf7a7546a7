"""``clsp.data.load_images``, the one place every split is loaded."""

from pathlib import Path

import pytest

from clsp.config import DataConfig
from clsp.data import load_images
from clsp.errors import ClspError


@pytest.mark.parametrize(
    ("source", "split", "valid"),
    [
        ("digits", "trian", "train, test"),
        ("cifar10", "trian", "train, test"),
        ("cifar100", "val", "train, test"),
        ("stl10", "unlabelled", "train, test, unlabeled"),
        ("folder", "trian", "train, val, test, all"),
    ],
)
def test_unknown_split_names_the_valid_ones_before_reading(tmp_path: Path, source: str, split: str, valid: str) -> None:
    cfg = DataConfig(source=source, root=None if source == "digits" else tmp_path / "absent")
    with pytest.raises(ClspError) as caught:
        load_images(cfg, split)
    assert str(caught.value) == f"split {split!r} is not a split of {source}; use one of: {valid}"
