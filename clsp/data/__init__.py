"""Dataset sources, each returning an :class:`ImageSet` of uint8 ``[N, H, W, C]`` images."""

from dataclasses import replace

import numpy as np

from clsp.config import DataConfig
from clsp.data.imageset import ImageSet
from clsp.data.pixels import resize_images, to_channels
from clsp.data.rows import ImageRows, as_rows
from clsp.errors import ClspError


def check_split(cfg: DataConfig, split: str) -> None:
    """Refuse, in one line naming the valid ones, a ``split`` that ``cfg.source`` does not have."""
    if split not in cfg.splits:
        raise ClspError(f"split {split!r} is not a split of {cfg.source_name}; use one of: {', '.join(cfg.splits)}")


def load_images(cfg: DataConfig, split: str) -> ImageSet:
    """Load one split (``train``, ``test``, ``unlabeled`` for STL-10; a folder's: ``clsp.data.folder_splits``) of
    ``cfg.source``.

    Images get ``cfg.channels`` (see :func:`~clsp.data.pixels.to_channels`), then are resized to
    ``cfg.image_size`` when it is set. Nothing is downloaded unless ``cfg.download``.
    A ``split`` the source does not have is refused before anything is read.
    """
    check_split(cfg, split)
    if cfg.source == "folder":
        from clsp.data.folder_splits import load_folder_split

        return load_folder_split(cfg, split)
    if cfg.source == "torchvision":
        from clsp.data.torchvision_source import load_torchvision_split

        return load_torchvision_split(cfg, split)
    if cfg.source == "digits":
        from clsp.data.digits import load_digits_split

        images = load_digits_split(split, cfg.image_size or 16, cfg.test_fraction, cfg.split_seed)
    elif cfg.source in ("fashion_mnist", "mnist"):
        from clsp.data.mnist import load_mnist_split

        images = load_mnist_split(cfg.source, cfg.root, split)
    elif cfg.source in ("cifar10", "cifar100"):
        from clsp.data.cifar import load_cifar_split

        images = load_cifar_split(cfg.source, cfg.root, split, cfg.download)
    else:
        from clsp.data.stl10 import load_stl10_split

        images = load_stl10_split(cfg.root, split, cfg.download)
    pixels = images.images if cfg.channels is None else to_channels(images.images, cfg.channels)
    if cfg.image_size is not None:
        pixels = resize_images(pixels, cfg.image_size)
    return ImageSet(images.name, pixels, images.labels, images.class_names)


def load_training_images(cfg: DataConfig) -> ImageSet:
    """What positives and SSL train on: ``cfg.train_split``, or its ``cfg.train_subset`` images (row order kept;
    class-stratified and fixed by ``cfg.split_seed`` when the split is labelled, else the first ones)."""
    images = load_images(cfg, cfg.train_split)
    n = cfg.train_subset
    if n is None or n >= len(images):
        return images
    if images.labels is None:
        rows = np.arange(n)
    else:
        from sklearn.model_selection import train_test_split

        rows = np.sort(
            train_test_split(np.arange(len(images)), train_size=n, stratify=images.labels, random_state=cfg.split_seed)[
                0
            ]
        )
    return images.subset(rows, f"{images.name}[{n} of {len(images)}]")


def load_images_at(cfg: DataConfig, split: str, size: int, limit: int | None = None) -> ImageSet:
    """``split`` of ``cfg.source`` (its first ``limit`` images when given) as uint8 ``[N, size, size, C]``, resized
    when read: what an encoder of input ``size`` sees in ``clsp eval`` and ``clsp features`` (STL-10: 96 -> 64 px)."""
    images = load_images(cfg, split)
    chosen = images.subset(np.arange(len(images) if limit is None else min(limit, len(images))), images.name)
    return replace(chosen, images=chosen.images.resized(size))


__all__ = ["ImageRows", "ImageSet", "as_rows", "check_split", "load_images", "load_images_at", "load_training_images"]
