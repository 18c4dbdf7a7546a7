"""The parity check's real inputs: the run's own images through clsp's own preprocessing, as the runtime feeds them.

Fresh random tensors have standard strides; what clsp makes does not always: uint8 NHWC images permuted to
``[N, 1, H, W]`` have strides ``(H*W, 1, W, 1)``, and the sampler's weight ``w`` is a scalar expanded to the
batch (stride 0). An artifact that misreads such inputs passes a check on random tensors only.
"""

from typing import Any

import numpy as np
import torch
from torch import Tensor

from clsp.config import Config
from clsp.data import load_images_at
from clsp.diffusion.sampler import Denoiser, SamplerSettings, images_to_model, sample_positives
from clsp.errors import ClspError
from clsp.export.specs import RealInputs
from clsp.features import normalise_images

MAX_IMAGES = 64
"""Images kept from the split; a larger parity batch repeats them."""


def first_images(images: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` of uint8 ``images [N, H, W, C]``, repeated from the start when there are fewer."""
    return images[np.arange(batch) % len(images)]


def check_channels(name: str, images: np.ndarray, channels: int) -> None:
    if images.shape[3] != channels:
        raise ClspError(f"{name} images have {images.shape[3]} channels, the model takes {channels}")


def encoder_real_inputs(cfg: Config, backbone: dict[str, Any]) -> RealInputs:
    """``data.test_split`` at the encoder's input size, normalised as ``clsp features`` does: float32
    ``images [B, C, S, S]`` with the strides :func:`~clsp.features.normalise_images` gives them."""
    split = load_images_at(cfg.data, cfg.data.test_split, int(backbone["image_size"]), MAX_IMAGES)
    check_channels(split.name, split.images, int(backbone["in_channels"]))
    images, mean, std = split.images, backbone["mean"], backbone["std"]

    def make(batch: int, device: torch.device) -> tuple[Tensor, ...]:
        return (normalise_images(first_images(images, batch), mean, std).to(device),)

    return RealInputs(f"{split.name} images", make)


class _FirstCall(Exception):
    def __init__(self, inputs: tuple[Tensor, ...]) -> None:
        self.inputs = inputs


def _stop_at_first_call(*inputs: Tensor) -> Tensor:
    raise _FirstCall(inputs)


def denoiser_real_inputs(cfg: Config, channels: int) -> RealInputs:
    """The anchors ``clsp positives generate`` uses, as the sampler hands its first step to the denoiser: float32
    ``x_t, anchor_t [B, C, H, W]``, int64 ``t [B]`` and float32 ``w [B]`` (``positives.weight`` expanded)."""
    from clsp.positives.generate import anchor_images

    images, anchors = anchor_images(cfg, MAX_IMAGES)
    check_channels(images.name, anchors, channels)
    settings = SamplerSettings.from_config(cfg)

    def make(batch: int, device: torch.device) -> tuple[Tensor, ...]:
        x0 = images_to_model(first_images(anchors, batch)).to(device)
        indices = torch.arange(batch)
        denoiser: Denoiser = _stop_at_first_call
        try:
            sample_positives(denoiser, x0, cfg.positives.weight, indices, indices * 0, cfg.positives.seed, settings)
        except _FirstCall as call:
            return call.inputs
        raise RuntimeError("the sampler never called the denoiser")

    return RealInputs(f"{images.name} anchors", make)
