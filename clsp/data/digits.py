"""The embedded default: scikit-learn's bundled 8×8 handwritten digits (1,797 real images, no download)."""

import numpy as np
from sklearn.datasets import load_digits

from clsp.data.imageset import ImageSet, stratified_split
from clsp.data.pixels import resize_images

DIGITS_MAX_VALUE = 16  # load_digits pixels are integers 0..16


def load_digits_split(split: str, image_size: int, test_fraction: float, split_seed: int) -> ImageSet:
    """One split of the digits: uint8 ``[N, image_size, image_size, 1]``, labels 0-9.

    The train/test split is stratified by class and fixed by ``split_seed`` (same rows on every machine).
    """
    bunch = load_digits()
    pixels = np.round(bunch.images * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_rows, test_rows = stratified_split(labels, test_fraction, split_seed, "digits")
    rows = train_rows if split == "train" else test_rows
    return ImageSet(
        name=f"digits/{split}",
        images=resize_images(pixels[rows], image_size),
        labels=labels[rows],
        class_names=tuple(str(d) for d in range(10)),
    )
