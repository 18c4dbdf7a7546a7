"""The in-memory form every data source returns: uint8 images, optional labels, a content fingerprint."""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from clsp.errors import ClspError

if TYPE_CHECKING:
    from clsp.data.rows import ImageRows


@dataclass(frozen=True)
class ImageSet:
    """Images of one split of one dataset.

    ``images``: uint8 ``[N, H, W, C]`` (C = 1 or 3), row i is dataset index i: in memory, or
    :class:`~clsp.data.rows.ImageRows` read on access (a mapped cache entry, a subset, a resize).
    ``labels``: int64 ``[N]`` class indices, or None for unlabelled data.
    """

    name: str
    images: "np.ndarray | ImageRows"
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = field(default=())
    files: tuple[str, ...] = field(default=())
    """Image folders: the file each row was read from (relative to the folder); () for datasets."""
    known_fingerprint: str = ""
    """:attr:`fingerprint` when already known (the decoded-image cache stores it), so it is not hashed again."""

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] not in (1, 3):
            raise ValueError(
                f"{self.name}: images must be uint8 [N,H,W,C], got {self.images.dtype} {self.images.shape}"
            )
        if self.files and len(self.files) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.files)} file names for {len(self.images)} images")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"{self.name}: labels {self.labels.shape} do not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: np.ndarray, name: str) -> "ImageSet":
        """Rows ``rows`` (int ``[n]``) of this set, named ``name``: the images still read on access, their labels."""
        from clsp.data.rows import as_rows  # rows.py imports this module

        labels = None if self.labels is None else self.labels[rows]
        return ImageSet(name, as_rows(self.images).select(rows), labels, self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def summary(self) -> dict[str, str]:
        """Name -> value rows describing the set, for the CLI's summary table."""
        h, w, c = self.image_shape
        rows = {
            "dataset": self.name,
            "images": f"{len(self)} x {h}x{w}x{c} uint8",
            "pixel mean / std": " / ".join(
                ", ".join(f"{v * 255:.1f}" for v in s) for s in pixel_statistics(self.images)
            )
            + " (of 255, per channel)",
        }
        if self.labels is None:
            rows["labels"] = "none (unlabelled)"
        else:
            counts = np.bincount(self.labels, minlength=len(self.class_names))
            rows["classes"] = f"{len(counts)}: {', '.join(self.class_names[:10])}{' ...' * (len(counts) > 10)}"
            rows["images per class"] = f"min {counts.min()}, max {counts.max()}"
        rows["fingerprint"] = self.fingerprint
        return rows

    @cached_property
    def fingerprint(self) -> str:
        """A stable content hash (shape, pixels, labels): equal for equal data on any machine, whatever its name."""
        return self.known_fingerprint or content_fingerprint(self.images, self.labels)


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


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int, where: str, class_names: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices ``(train, test)`` of a class-stratified split of int64 ``labels`` [N]: ``test_fraction`` of
    each class's rows to test, the same rows for the same ``labels`` and ``seed`` on every machine. Too few images
    of a class to split is a one-line error naming ``where`` (the dataset) and the class."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels, minlength=len(class_names))
    if counts.min() < 2 or round(test_fraction * len(labels)) < len(counts):
        few = int(counts.argmin())
        raise ClspError(
            f"{where}: class {class_names[few] if class_names else few!r} has {counts.min()} image(s), too few to "
            f"split {len(labels)} images class-stratified at data.test_fraction={test_fraction}; add images, raise "
            "data.test_fraction, or give a test split of its own"
        )
    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)
