"""Pure functions on uint8 ``[N, H, W, C]`` pixel arrays (in memory or memory-mapped): content hash, per-channel
statistics, channel conversion and resizing."""

import hashlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F


def content_fingerprint(images: np.ndarray, labels: np.ndarray | None, chunk: int = 256) -> str:
    """BLAKE2b-128 of ``images``' shape, its uint8 pixels (hashed ``chunk`` images at a time, so a memory-mapped
    array is streamed, not copied) and int64 ``labels``."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(images.shape).encode())
    for start in range(0, len(images), chunk):
        digest.update(np.ascontiguousarray(images[start : start + chunk]).data)
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return digest.hexdigest()


STATS_CHUNK_PIXELS = 1 << 21
"""Pixels per chunk of :func:`pixel_statistics` (48 MB of float64 at 3 channels), whatever the dataset's size."""


def pixel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float64 ``[C]``, [0, 1] units) of uint8 ``[N, H, W, C]`` ``images``, read a chunk
    at a time (a memory-mapped array is never copied whole) in two passes: the mean, then the mean squared
    deviation from it. With one chunk this is numpy's own ``mean(0)`` and ``std(0)``."""
    rows = max(1, STATS_CHUNK_PIXELS // (images.shape[1] * images.shape[2]))

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(images), rows):
            chunk = images[start : start + rows].reshape(-1, images.shape[-1]).astype(np.float64)
            chunk /= 255  # in place (as below): one float64 chunk in memory, the same values as out of place
            yield chunk

    def squared_deviations(chunk: np.ndarray) -> np.ndarray:
        chunk -= mean
        chunk *= chunk
        return chunk

    count = len(images) * images.shape[1] * images.shape[2]
    mean = sum(chunk.sum(0) for chunk in chunks()) / count
    variance = sum(squared_deviations(chunk).sum(0) for chunk in chunks()) / count
    return mean, np.sqrt(variance)


LUMA_WEIGHTS = (299, 587, 114)
"""ITU-R 601 luma in thousandths: grey = (299 R + 587 G + 114 B + 500) // 1000 on uint8 values."""


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` as ``[N, H, W, channels]``: RGB -> grey by :data:`LUMA_WEIGHTS` (an image with
    R = G = B keeps its value), grey -> RGB by repeating it; unchanged when C is already ``channels``."""
    have = images.shape[3]
    if have == channels:
        return images
    if (have, channels) == (1, 3):
        return np.repeat(images, 3, axis=3)
    if (have, channels) == (3, 1):
        luma = (images.astype(np.uint32) @ np.array(LUMA_WEIGHTS, np.uint32) + 500) // 1000
        return luma.astype(np.uint8)[..., None]
    raise ValueError(f"cannot turn {have}-channel images into {channels} channels")


def resize_images(images: np.ndarray, size: int, chunk: int = 256) -> np.ndarray:
    """Resize uint8 ``[N, H, W, C]`` images to ``[N, size, size, C]`` with antialiased bilinear interpolation.

    Non-square images are resized on their shorter side, then centre-cropped.
    """
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for start in range(0, n, chunk):
        batch = torch.from_numpy(images[start : start + chunk]).permute(0, 3, 1, 2).float()
        batch = F.interpolate(batch, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        batch = batch[:, :, top : top + size, left : left + size]
        out[start : start + chunk] = batch.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out
