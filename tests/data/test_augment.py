"""The augmentation family T (method.md 3.1 table) built from AugmentConfig."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from clsp.config import AugmentConfig
from clsp.data.augment import DATASET_STATS, build_augmentation, normalisation


def steps(t: v2.Compose) -> dict[str, v2.Transform]:
    out = {}
    for step in t.transforms:
        inner = step.transforms[0] if isinstance(step, v2.RandomApply) else step
        out[type(inner).__name__] = step
    return out


def test_simclr_pipeline_matches_the_table():
    t = steps(build_augmentation(AugmentConfig(), 32, *DATASET_STATS["cifar10"]))
    assert tuple(t["RandomResizedCrop"].size) == (32, 32) and t["RandomResizedCrop"].scale == (0.08, 1.0)
    jitter = t["ColorJitter"]
    assert jitter.p == 0.8
    assert jitter.transforms[0].saturation == (0.6, 1.4) and jitter.transforms[0].hue == (-0.1, 0.1)
    assert t["RandomHorizontalFlip"].p == 0.5 and t["RandomGrayscale"].p == 0.2
    assert "RandomSolarize" not in t
    assert list(t["Normalize"].mean) == [0.4914, 0.4822, 0.4465]


def test_moco_pipeline_has_weaker_saturation_and_solarisation():
    cfg = AugmentConfig(color_jitter=(0.4, 0.4, 0.2, 0.1), solarize_p=0.2)
    t = steps(build_augmentation(cfg, 32, *DATASET_STATS["cifar10"]))
    assert t["ColorJitter"].transforms[0].saturation == (0.8, 1.2)
    assert t["RandomSolarize"].p == 0.2 and t["RandomSolarize"].threshold == 128


@pytest.mark.parametrize("channels", [1, 3])
def test_output_is_normalised_float_of_the_crop_size(channels):
    image = torch.randint(0, 256, (channels, 40, 40), dtype=torch.uint8)
    t = build_augmentation(AugmentConfig(crop_size=24), 40, (0.5,) * channels, (0.25,) * channels)
    out = t(image)
    assert out.shape == (channels, 24, 24) and out.dtype == torch.float32
    assert out.min() >= -2.0 - 1e-6 and out.max() <= 2.0 + 1e-6  # (x - 0.5) / 0.25 for x in [0, 1]


def test_draws_are_random_but_seedable():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    t = build_augmentation(AugmentConfig(), 32, *DATASET_STATS["cifar10"])
    torch.manual_seed(0)
    a, b = t(image), t(image)
    torch.manual_seed(0)
    assert not torch.equal(a, b) and torch.equal(t(image), a)


def test_normalisation_uses_the_table_or_measures_the_images():
    assert normalisation("stl10", np.zeros((1, 2, 2, 3), np.uint8)) == DATASET_STATS["stl10"]
    images = np.array([0, 255], dtype=np.uint8).reshape(2, 1, 1, 1)
    mean, std = normalisation("digits", images)
    assert mean == pytest.approx((0.5,)) and std == pytest.approx((0.5,))
