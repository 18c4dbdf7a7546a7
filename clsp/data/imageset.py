"""The in-memory form every data source returns: uint8 images, optional labels, a content fingerprint."""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from clsp.data.pixels import content_fingerprint, pixel_statistics
from clsp.data.rows import ImageRows, as_rows
from clsp.errors import ClspError


@dataclass(frozen=True)
class ImageSet:
    """Images of one split of one dataset.

    ``images``: uint8 ``[N, H, W, C]`` (C = 1 or 3), row i is dataset index i: in memory, or
    :class:`~clsp.data.rows.ImageRows` read on access (a mapped cache entry, a subset, a resize).
    ``labels``: int64 ``[N]`` class indices, or None for unlabelled data.
    """

    name: str
    images: np.ndarray | ImageRows
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
