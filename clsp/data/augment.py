"""The SimCLR / MoCo augmentation family T (method.md 3.1), applied alike to real and synthetic images.

SimCLR and MoCo differ only in ColorJitter's saturation (0.4 vs 0.2) and solarisation (p 0 vs 0.2); both are
:class:`~clsp.config.AugmentConfig` fields, so one pipeline serves both.
"""

import numpy as np
import torch
from torchvision.transforms import v2

from clsp.config import AugmentConfig
from clsp.data.pixels import pixel_statistics

DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.2471, 0.2435, 0.2616)),
}
"""The reference's normalisation per dataset (STL-10: the newer values)."""


def normalisation(source: str, images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` in [0, 1] units: the reference's values for CIFAR/STL-10, otherwise measured
    on ``images`` (uint8 ``[N, H, W, C]``, e.g. digits or an image folder) by :func:`pixel_statistics`, the std
    floored at 1e-3."""
    if source in DATASET_STATS:
        return DATASET_STATS[source]
    mean, std = pixel_statistics(images)
    return tuple(mean.tolist()), tuple(np.maximum(std, 1e-3).tolist())


def build_augmentation(
    cfg: AugmentConfig, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> v2.Compose:
    """One random draw of T per call: uint8 ``[C, H, W]`` tensor -> normalised float32 ``[C, S, S]`` with
    ``S = cfg.crop_size or image_size``. Randomness comes from torch's global generator.

    RandomResizedCrop(S, cfg.crop_scale), ColorJitter(cfg.color_jitter) with p ``color_jitter_p``, horizontal flip,
    grayscale, solarise at 128 (uint8), then scaling to [0, 1] and normalising with ``cfg.mean/std`` or ``mean/std``.
    """
    size = cfg.crop_size or image_size
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True),
        v2.RandomApply([v2.ColorJitter(*cfg.color_jitter)], p=cfg.color_jitter_p),
        v2.RandomHorizontalFlip(cfg.hflip_p),
        v2.RandomGrayscale(cfg.grayscale_p),
    ]
    if cfg.solarize_p > 0:
        steps.append(v2.RandomSolarize(128, p=cfg.solarize_p))
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(cfg.mean or mean), list(cfg.std or std)),
    ]
    return v2.Compose(steps)
