"""Features from an exported encoder equal the torch encoder's (clsp/runtime/features.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clsp.config import DataConfig
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


def test_a_grey_run_trained_on_a_mixed_folder_encodes_its_input_folder(tmp_path: Path, command, config_of) -> None:
    from clsp.contrastive.train import train_ssl

    digits = load_images(DataConfig(), "test")
    folder = tmp_path / "images"
    for i in range(32):  # grey digits stored as L, LA, RGB and palette PNGs, some 4 px wider than tall
        grey = np.pad(digits.images[i, ..., 0], ((0, 0), (2, 2))) if i % 3 == 0 else digits.images[i, ..., 0]
        picture = Image.fromarray(grey).convert(("L", "LA", "RGB", "P")[i % 4])
        (folder / f"class{digits.labels[i]}").mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"class{digits.labels[i]}" / f"{i:02d}.png")
    source = ["data.source=folder", f"data.root={folder}", "data.channels=1", "data.train_split=all"]
    ssl = ["ssl.epochs=1", "ssl.batch_size=16", "ssl.clsp_weight=0", "ssl.num_workers=0", "ssl.projector_hidden_dim=64"]
    train_ssl(config_of(tmp_path / "run", *source, *ssl))
    from_input = command("features", tmp_path / "run", "--input", folder, "--out", tmp_path / "input.safetensors")
    assert from_input.exit_code == 0, from_input.output
    assert "folder:images: 32 x (16, 16, 1)" in from_input.output
    sets = [a for o in source for a in ("--set", o)]
    from_source = command(
        "features", tmp_path / "run", *sets, "--split", "all", "--out", tmp_path / "source.safetensors"
    )
    assert from_source.exit_code == 0, from_source.output
    by_input, by_source = load_file(tmp_path / "input.safetensors"), load_file(tmp_path / "source.safetensors")
    assert by_input["features"].shape == (32, 256)
    torch.testing.assert_close(by_input["features"], by_source["features"], rtol=0, atol=0)
    torch.testing.assert_close(by_input["labels"], by_source["labels"], rtol=0, atol=0)
