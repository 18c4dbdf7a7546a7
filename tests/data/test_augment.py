"""The augmentation family T (method.md 3.1): torchvision's distributions, batched, against torchvision's ops."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision import transforms
from torchvision.transforms.v2 import functional as F

from clsp.config import AugmentConfig
from clsp.data.augment import (
    DATASET_STATS,
    NUM_UNIFORMS,
    SOLARIZE_THRESHOLD,
    Augmentation,
    ViewParams,
    normalisation,
)

COLOUR_OPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


def reference_view(image: torch.Tensor, p: ViewParams, b: int, aug: Augmentation) -> torch.Tensor:
    """View b, one image at a time with torchvision's float ops: uint8 ``[C, H, W]`` -> float ``[C, S, S]``."""
    box = (int(p.top[b]), int(p.left[b]), int(p.height[b]), int(p.width[b]))
    x = F.resized_crop(image.float() / 255, *box, [aug.size, aug.size], antialias=True)
    for op in p.order[b].tolist():
        if op >= 0 and not math.isnan(p.factors[b, op]):
            x = COLOUR_OPS[op](x, float(p.factors[b, op]))
    if p.flip[b]:
        x = F.horizontal_flip(x)
    if p.gray[b]:
        x = F.rgb_to_grayscale(x, num_output_channels=x.shape[0])
    if p.solarize[b]:
        x = F.solarize(x, SOLARIZE_THRESHOLD)
    return F.normalize(x, aug.mean.tolist(), aug.std.tolist())


@pytest.mark.parametrize(
    "channels, height, width, crop_size",
    [(1, 28, 28, None), (3, 32, 32, None), (3, 40, 40, 24), (1, 96, 96, 64), (3, 20, 50, 16)],
)
def test_batched_views_equal_torchvision_ops_one_image_at_a_time(channels, height, width, crop_size):
    """Upscaled and downscaled (antialiased) crops, non-square images, all four jitter ops, flips, greyscale and
    solarisation, on fresh random images and draws."""
    cfg = AugmentConfig(crop_size=crop_size, solarize_p=0.3)
    aug = Augmentation(cfg, height, (0.4,) * channels, (0.3,) * channels)
    images = torch.randint(0, 256, (48, channels, height, width), dtype=torch.uint8)
    params = aug.params(torch.rand(48, NUM_UNIFORMS, dtype=torch.float64), height, width)
    assert params.flip.any() and params.solarize.any() and (params.order[:, 0] == -1).any()
    views = aug.apply(images, params)
    reference = torch.stack([reference_view(image, params, b, aug) for b, image in enumerate(images)])
    assert views.shape == (48, channels, aug.size, aug.size) and views.dtype == torch.float32
    assert torch.allclose(views, reference, atol=1e-4, rtol=0)  # 3e-5 in [0, 1] units: float rounding only


def test_drawn_parameters_follow_torchvision_get_params():
    """Two-sample KS tests (fixed seeds) of crop area, aspect ratio and offset, and of the jitter factors and op
    order, against torchvision's RandomResizedCrop.get_params and ColorJitter.get_params."""
    n, size, cfg = 4000, 28, AugmentConfig(crop_scale=(0.2, 1.0))
    aug = Augmentation(cfg, size, (0.5,), (0.5,))
    ours = aug.params(
        torch.rand(n, NUM_UNIFORMS, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), size, size
    )
    torch.manual_seed(2)
    boxes = np.array([transforms.RandomResizedCrop.get_params(torch.empty(0, size, size), [0.2, 1.0], [3 / 4, 4 / 3])
                      for _ in range(n)], dtype=float)  # fmt: skip
    jitter = [transforms.ColorJitter.get_params(*aug.jitter_ranges) for _ in range(n)]
    top, left, h, w = (t.numpy() for t in (ours.top, ours.left, ours.height, ours.width))
    for a, b in [
        (h * w, boxes[:, 2] * boxes[:, 3]),
        (w / h, boxes[:, 3] / boxes[:, 2]),
        (top, boxes[:, 0]),
        (left, boxes[:, 1]),
    ]:
        assert stats.ks_2samp(a, b).pvalue > 0.001
    assert (top >= 0).all() and (top + h <= size).all() and (left + w <= size).all() and (h * w >= 1).all()
    for column in range(4):
        theirs = [j[1 + column] for j in jitter]
        assert stats.ks_2samp(ours.factors[:, column].numpy(), theirs).pvalue > 0.001
    first_op = np.bincount(ours.order[ours.order[:, 0] >= 0, 0].numpy(), minlength=4)
    assert stats.chisquare(first_op).pvalue > 0.001  # every op first equally often
    assert abs((ours.order[:, 0] >= 0).double().mean().item() - cfg.color_jitter_p) < 0.03
    assert abs(ours.flip.double().mean().item() - cfg.hflip_p) < 0.03
    assert abs(ours.gray.double().mean().item() - cfg.grayscale_p) < 0.03 and not ours.solarize.any()


def test_the_fallback_is_the_central_crop_clamped_to_the_ratio_range():
    aug = Augmentation(AugmentConfig(crop_scale=(1.0, 1.0)), 30, (0.5,), (0.5,))
    wide = aug.params(torch.full((1, NUM_UNIFORMS), 0.999, dtype=torch.float64), 10, 30)  # no try fits 10 x 30
    assert transforms.RandomResizedCrop.get_params(torch.empty(0, 10, 30), [1.0, 1.0], [3 / 4, 4 / 3]) == (0, 8, 10, 13)
    assert (wide.top.item(), wide.left.item(), wide.height.item(), wide.width.item()) == (0, 8, 10, 13)


def test_simclr_and_moco_settings_map_to_torchvision_jitter_ranges():
    simclr = Augmentation(AugmentConfig(), 32, *DATASET_STATS["cifar10"])
    assert simclr.jitter_ranges == ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    moco = Augmentation(AugmentConfig(color_jitter=(0.4, 0.4, 0.2, 0.1), solarize_p=0.2), 32, *DATASET_STATS["cifar10"])
    assert moco.jitter_ranges[2] == (0.8, 1.2) and moco.params(torch.rand(2000, NUM_UNIFORMS), 32, 32).solarize.any()
    grey = Augmentation(AugmentConfig(color_jitter=(0.4, 0.4, 0.0, 0.0)), 32, (0.5,), (0.5,))
    p = grey.params(torch.rand(10, NUM_UNIFORMS), 32, 32)
    assert grey.jitter_ranges[2:] == (None, None) and p.factors[:, 2:].isnan().all()
    assert torch.equal(simclr.mean, torch.tensor(DATASET_STATS["cifar10"][0]))


@pytest.mark.parametrize("channels", [1, 3])
def test_output_is_normalised_float_of_the_crop_size(channels):
    images = torch.randint(0, 256, (4, channels, 40, 40), dtype=torch.uint8)
    out = Augmentation(AugmentConfig(crop_size=24), 40, (0.5,) * channels, (0.25,) * channels)(images)
    assert out.shape == (4, channels, 24, 24) and out.dtype == torch.float32
    assert out.min() >= -2.0 - 1e-6 and out.max() <= 2.0 + 1e-6  # (x - 0.5) / 0.25 for x in [0, 1]


def test_draws_are_random_but_seedable():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    t = Augmentation(AugmentConfig(), 32, *DATASET_STATS["cifar10"])
    torch.manual_seed(0)
    a, b = t(images), t(images)
    torch.manual_seed(0)
    assert not torch.equal(a, b) and torch.equal(t(images), a)


def test_a_view_does_not_depend_on_the_batch_it_is_in():
    t = Augmentation(AugmentConfig(), 28, (0.5,), (0.5,))
    images, draws = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8), torch.rand(64, NUM_UNIFORMS)
    assert torch.equal(t(images, draws)[40:], t(images[40:], draws[40:]))


def test_normalisation_uses_the_table_or_measures_the_images():
    assert normalisation("stl10", np.zeros((1, 2, 2, 3), np.uint8)) == DATASET_STATS["stl10"]
    images = np.array([0, 255], dtype=np.uint8).reshape(2, 1, 1, 1)
    mean, std = normalisation("digits", images)
    assert mean == pytest.approx((0.5,)) and std == pytest.approx((0.5,))
