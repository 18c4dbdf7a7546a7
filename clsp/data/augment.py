"""The SimCLR / MoCo augmentation family T (method.md 3.1), applied alike to real and synthetic images.

T is split in two so that a DataLoader batch costs a few tensor ops instead of one torchvision pipeline per view:
each view's randomness is a row of :data:`NUM_UNIFORMS` uniforms (drawn per item under its keyed seed), and
:class:`Augmentation` turns a batch of rows into parameters with the distributions of torchvision's
``RandomResizedCrop.get_params`` and ``ColorJitter.get_params`` (:meth:`Augmentation.params`), then applies them to
the whole batch (:meth:`Augmentation.apply`). The ops are torchvision's float ops (v2.functional) written for
per-sample parameters: the crop-and-resize is antialiased bilinear (the weights of ``interpolate(antialias=True)``)
as two batched matrix products, with the flip folded into the column weights. Unlike a per-image uint8 pipeline,
nothing is rounded to 8 bits between the ops.

SimCLR and MoCo differ only in ColorJitter's saturation (0.4 vs 0.2) and solarisation (p 0 vs 0.2); both are
:class:`~clsp.config.AugmentConfig` fields, so one pipeline serves both.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms

from clsp.config import AugmentConfig
from clsp.data.pixels import pixel_statistics

DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.2471, 0.2435, 0.2616)),
}
"""The reference's normalisation per dataset (STL-10: the newer values)."""

CROP_TRIES = 10
"""RandomResizedCrop's attempts at a box that fits before it falls back to the central crop (torchvision's 10)."""
NUM_UNIFORMS = 2 * CROP_TRIES + 2 + 1 + 4 + 4 + 3
"""Uniform draws per view: crop (area and log-ratio per try, two offsets), jitter (coin, four factors, four sort
keys for the op order), flip, greyscale and solarise coins."""
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601 luma, torchvision's ``rgb_to_grayscale``."""
SOLARIZE_THRESHOLD = 128 / 255


def normalisation(source: str, images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` in [0, 1] units: the reference's values for CIFAR/STL-10, otherwise measured
    on ``images`` (uint8 ``[N, H, W, C]``, e.g. digits or an image folder) by :func:`pixel_statistics`, the std
    floored at 1e-3."""
    if source in DATASET_STATS:
        return DATASET_STATS[source]
    mean, std = pixel_statistics(images)
    return tuple(mean.tolist()), tuple(np.maximum(std, 1e-3).tolist())


@dataclass
class ViewParams:
    """The drawn parameters of B views (``[B]`` tensors unless said)."""

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    """The crop box in pixels (float64 holding integers)."""
    factors: Tensor
    """float64 ``[B, 4]``: brightness, contrast, saturation factors and hue shift; NaN skips the op."""
    order: Tensor
    """int64 ``[B, 4]``: the jitter ops (columns of ``factors``) in the order they run; -1: no jitter."""
    flip: Tensor
    gray: Tensor
    solarize: Tensor
    """bool."""


class Augmentation:
    """T with ``cfg``'s settings: uint8 ``[B, C, H, W]`` images -> normalised float32 ``[B, C, S, S]`` views,
    ``S = cfg.crop_size or image_size``.

    RandomResizedCrop(S, cfg.crop_scale, ratio 3/4 to 4/3), ColorJitter(cfg.color_jitter) with p
    ``color_jitter_p`` (its four ops in random order), horizontal flip, greyscale, solarise at 128/255, then
    normalising with ``cfg.mean/std`` or ``mean/std``. Greyscale, saturation and hue leave 1-channel images as
    they are, as torchvision's ops do.

    A view's randomness is :data:`NUM_UNIFORMS` uniforms in [0, 1), drawn by the caller (one ``torch.rand`` call per
    item under its keyed seed) and turned into parameters for the whole batch at once by :meth:`params`, with
    torchvision's distributions: ``RandomResizedCrop.get_params``' ten tries and central fallback,
    ``ColorJitter.get_params``' uniform factors and uniformly random op order.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.cfg = cfg
        self.size = cfg.crop_size or image_size
        jitter = transforms.ColorJitter(*cfg.color_jitter)  # torchvision turns strengths into factor ranges
        self.jitter_ranges = (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
        self.mean = torch.tensor(cfg.mean or mean, dtype=torch.float32)
        self.std = torch.tensor(cfg.std or std, dtype=torch.float32)

    def params(self, uniforms: Tensor, height: int, width: int) -> ViewParams:
        """float64 ``[B, NUM_UNIFORMS]`` uniforms -> the parameters of B views of ``height`` x ``width`` images."""
        u = uniforms.double()
        crop, u = u[:, : 2 * CROP_TRIES + 2], u[:, 2 * CROP_TRIES + 2 :]
        top, left, box_h, box_w = crop_boxes(crop, height, width, self.cfg.crop_scale)
        jittered = u[:, 0] < self.cfg.color_jitter_p
        factors = torch.full((len(u), 4), math.nan, dtype=torch.float64)
        for column, bounds in enumerate(self.jitter_ranges):
            if bounds is not None:
                factors[:, column] = bounds[0] + (bounds[1] - bounds[0]) * u[:, 1 + column]
        order = torch.where(jittered[:, None], u[:, 5:9].argsort(1), -1)
        coins = (self.cfg.hflip_p, self.cfg.grayscale_p, self.cfg.solarize_p)
        flip, gray, solarize = (u[:, 9 + i] < p for i, p in enumerate(coins))
        return ViewParams(top, left, box_h, box_w, factors, order, flip, gray, solarize)

    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """uint8 ``[B, C, H, W]`` images and their views' parameters -> float32 ``[B, C, S, S]`` normalised views."""
        c, h, w = images.shape[1:]
        rows = resize_weights(params.top, params.height, h, self.size)
        columns = resize_weights(params.left, params.width, w, self.size)
        columns = torch.where(params.flip[:, None, None], columns.flip(1), columns)
        x = rows[:, None] @ (images.float() / 255) @ columns.transpose(1, 2)[:, None]
        colour_ops = (brightness, contrast, saturation, hue)[: 4 if c == 3 else 2]  # the rest leave grey as is
        for position in range(4):
            for index, op in enumerate(colour_ops):
                factor = params.factors[:, index]
                chosen = (params.order[:, position] == index) & ~factor.isnan()
                if chosen.any():
                    x[chosen] = op(x[chosen], factor[chosen].float()[:, None, None, None])
        if c == 3 and params.gray.any():
            x[params.gray] = luma(x[params.gray]).expand(-1, 3, -1, -1)
        x = torch.where(params.solarize[:, None, None, None] & (x >= SOLARIZE_THRESHOLD), 1 - x, x)
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def __call__(self, images: Tensor, uniforms: Tensor | None = None) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> float32 ``[B, C, S, S]``, one view each; ``uniforms`` ``[B, NUM_UNIFORMS]``,
        default fresh ones from torch's global generator."""
        if uniforms is None:
            uniforms = torch.rand(len(images), NUM_UNIFORMS, dtype=torch.float64)
        return self.apply(images, self.params(uniforms, *images.shape[2:]))


def crop_boxes(u: Tensor, height: int, width: int, scale: tuple[float, float]) -> tuple[Tensor, ...]:
    """RandomResizedCrop's boxes (ratio 3/4 to 4/3) from float64 ``[B, 2 * CROP_TRIES + 2]`` uniforms: the first
    try whose box fits (area fraction uniform in ``scale``, log aspect ratio uniform), else the central crop of
    the whole image clamped to the ratio range; its offset uniform over the positions that fit. Returns float64
    ``[B]`` top, left, height, width."""
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :CROP_TRIES])
    ratio = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[:, CROP_TRIES : 2 * CROP_TRIES])
    box_w, box_h = torch.sqrt(area * ratio).round(), torch.sqrt(area / ratio).round()
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = fits.double().argmax(1, keepdim=True)  # the first True (0 if none: then the fallback below)
    box_w, box_h = box_w.gather(1, first)[:, 0], box_h.gather(1, first)[:, 0]
    fallback_w, fallback_h = float(width), float(height)
    if width / height < 3 / 4:
        fallback_h = float(round(width / (3 / 4)))
    elif width / height > 4 / 3:
        fallback_w = float(round(height * 4 / 3))
    found = fits.any(1)
    box_w = torch.where(found, box_w, fallback_w)
    box_h = torch.where(found, box_h, fallback_h)
    offsets = u[:, 2 * CROP_TRIES :]
    top = torch.where(found, (offsets[:, 0] * (height - box_h + 1)).floor(), (height - box_h) // 2)
    left = torch.where(found, (offsets[:, 1] * (width - box_w + 1)).floor(), (width - box_w) // 2)
    return top, left, box_h, box_w


def resize_weights(start: Tensor, length: Tensor, size: int, out: int) -> Tensor:
    """Antialiased bilinear resampling of pixels ``[start, start + length)`` of an axis of ``size`` pixels to
    ``out`` pixels, as ``interpolate(mode="bilinear", antialias=True)`` weighs them: float32 ``[B, out, size]``
    (rows sum to 1), for ``start`` and ``length`` ``[B]``. A triangle filter stretched by the downscale factor
    (1 when upscaling, which makes it plain bilinear with clamped edges), restricted to the crop."""
    scale = (length / out)[:, None, None]
    centre = start[:, None, None] + (torch.arange(out, dtype=torch.float64)[None, :, None] + 0.5) * scale
    pixel = torch.arange(size, dtype=torch.float32)[None, None, :] + 0.5
    weights = (1 - (pixel - centre.float()).abs_().div_(scale.clamp(min=1).float())).clamp_(min=0)
    weights.masked_fill_((pixel < start[:, None, None]) | (pixel >= (start + length)[:, None, None]), 0)
    return weights.div_(weights.sum(-1, keepdim=True))


def luma(x: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` grey levels."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b)[:, None]


def blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (x * factor).clamp(0, 1)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    grey = luma(x) if x.shape[1] == 3 else x
    return blend(x, grey.mean((1, 2, 3), keepdim=True), factor)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """RGB ``[B, 3, H, W]`` only (torchvision leaves grey images as they are; :meth:`Augmentation.apply` skips them)."""
    return blend(x, luma(x), factor)


def hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of RGB ``[B, 3, H, W]`` in [0, 1] by ``shift`` turns (HSV round trip); RGB only, as
    :func:`saturation`."""
    r, g, b = x.unbind(1)
    value, argmax = x.max(1)
    chroma = value - x.min(1).values
    saturation_ = chroma / value.clamp(min=1e-12)
    safe = chroma.clamp(min=1e-12)
    sector = torch.stack([((g - b) / safe) % 6, (b - r) / safe + 2, (r - g) / safe + 4], 1)
    h = sector.gather(1, argmax[:, None])[:, 0] / 6
    h = torch.where(chroma > 0, h, 0) + shift[:, 0]
    h6 = (h % 1) * 6
    k = torch.arange(3, dtype=x.dtype).mul(-2).add(5)[None, :, None, None]  # 5, 3, 1: the R, G, B phases
    # The standard HSV -> RGB: channel = V - V S max(0, min(k', 4 - k', 1)) with k' = (phase + 6 h) mod 6.
    phase = (k + h6[:, None]) % 6
    ramp = torch.minimum(phase, 4 - phase).clamp(0, 1)
    return value[:, None] - (value * saturation_)[:, None] * ramp
