"""STL-10 from torchvision's on-disk layout (``stl10_binary/*.bin``, 96×96 RGB)."""

from pathlib import Path

import numpy as np

from clsp.data.imageset import ImageSet
from clsp.errors import ClspError

FOLDER = "stl10_binary"
SIDE = 96
ARCHIVE = "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"


def _download(root: Path) -> None:
    from torchvision.datasets import STL10

    STL10(str(root), split="train+unlabeled", download=True)


def _read_images(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    per_image = 3 * SIDE * SIDE
    if raw.size == 0 or raw.size % per_image:
        raise ClspError(
            f"{path}: {raw.size} bytes is not a whole number of {SIDE}x{SIDE} RGB images; the file is "
            "truncated or not STL-10: download it again"
        )
    # Stored channel-major and column-major: [N, C, W, H].
    return np.ascontiguousarray(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 3, 2, 1))


def load_stl10_split(root: Path, split: str, download: bool = False) -> ImageSet:
    """STL-10 ``split`` (train: 5,000, test: 8,000 labelled; unlabeled: 100,000) as uint8 ``[N, 96, 96, 3]``.

    ``root`` is the folder that holds ``stl10_binary/``, as for torchvision. Labels are 0-9 (unlabeled: None).
    """
    folder = Path(root) / FOLDER
    images_path = folder / f"{split}_X.bin"
    labels_path = None if split == "unlabeled" else folder / f"{split}_y.bin"
    needed = [p for p in (images_path, labels_path) if p is not None]
    if download and not all(p.is_file() for p in needed):
        _download(Path(root))
    for path in needed:
        if not path.is_file():
            raise ClspError(
                f"stl10: {path} not found; extract {ARCHIVE} into {root}, or set data.download=true (--download) "
                "on a machine with internet"
            )
    images = _read_images(images_path)
    labels = None
    if labels_path is not None:
        labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
            raise ClspError(
                f"{labels_path}: expected {len(images)} labels in 1..10 for {images_path.name}; download it again"
            )
    names_path = folder / "class_names.txt"
    class_names = tuple(names_path.read_text().split()) if names_path.is_file() else ()
    return ImageSet(name=f"stl10/{split}", images=images, labels=labels, class_names=class_names)
