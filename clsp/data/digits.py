"""The embedded default: scikit-learn's bundled 8×8 handwritten digits (1,797 real images, no download)."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from clsp.data.imageset import ImageSet, resize_images

DIGITS_MAX_VALUE = 16  # load_digits pixels are integers 0..16


def load_digits_split(split: str, image_size: int, test_fraction: float, split_seed: int) -> ImageSet:
    """One split of the digits: uint8 ``[N, image_size, image_size, 1]``, labels 0-9.

    The train/test split is stratified by class and fixed by ``split_seed`` (same rows on every machine).
    """
    bunch = load_digits()
    pixels = np.round(bunch.images * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    rows = np.sort(train_idx if split == "train" else test_idx)
    return ImageSet(
        name=f"digits/{split}",
        images=resize_images(pixels[rows], image_size),
        labels=labels[rows],
        class_names=tuple(str(d) for d in range(10)),
    )
