"""Features from an exported encoder equal the torch encoder's (clsp/runtime/features.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clsp.data import ImageSet, load_images
from clsp.errors import ClspError
from clsp.runtime.features import encode_images, save_features


@pytest.fixture
def digit_images(exported_run: Path, config_of) -> ImageSet:
    images = load_images(config_of(exported_run).data, "test")
    return ImageSet("digits test[:300]", images.images[:300], images.labels[:300])


@pytest.mark.parametrize("backend", ["ort", "torchscript"])
def test_exported_encoders_give_the_torch_features(exported_run: Path, config_of, digit_images, backend: str) -> None:
    cfg = config_of(exported_run, "export.max_batch=128")  # three batches, the last one short
    reference = encode_images(cfg, "torch", digit_images)
    features = encode_images(cfg, backend, digit_images)
    assert features.shape == (300, 256) and features.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(features, reference, dim=1)
    assert cosine.min() > 0.9999


def test_images_of_another_size_are_refused(exported_run: Path, config_of) -> None:
    images = ImageSet("big", np.zeros((2, 32, 32, 1), np.uint8))
    with pytest.raises(ClspError, match=r"big: images are \[32, 32, 1\] \[H,W,C\] but the encoder takes \[16, 16, 1\]"):
        encode_images(config_of(exported_run), "ort", images)


def test_features_are_saved_as_npy_or_safetensors(tmp_path: Path) -> None:
    features, labels = torch.randn(4, 3), np.arange(4)
    npy = save_features(tmp_path / "f.npy", features, labels)
    np.testing.assert_array_equal(np.load(npy), features.numpy())
    saved = load_file(save_features(tmp_path / "f.safetensors", features, labels))
    assert torch.equal(saved["features"], features) and saved["labels"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ClspError, match=r"use a .npy or .safetensors file name"):
        save_features(tmp_path / "f.csv", features, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy", "f.safetensors"]
