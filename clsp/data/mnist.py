"""Fashion-MNIST and MNIST from their idx files (gzipped or not), in Debian's or torchvision's layout.

``data.root`` may hold the four files directly (Debian's ``dataset-fashion-mnist`` installs them in
``/usr/share/datasets/fashion-mnist``) or torchvision's ``FashionMNIST/raw/`` (``MNIST/raw/``) below it.
"""

import gzip
from pathlib import Path

import numpy as np

from clsp.data.imageset import ImageSet
from clsp.errors import ClspError

LAYOUT = {
    "fashion_mnist": {
        "torchvision": "FashionMNIST",
        "debian_root": Path("/usr/share/datasets/fashion-mnist"),
        "debian_package": "dataset-fashion-mnist",
        "classes": (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    },
    "mnist": {
        "torchvision": "MNIST",
        "debian_root": Path("/usr/share/datasets/mnist"),
        "debian_package": None,
        "classes": tuple(str(d) for d in range(10)),
    },
}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 dimensions / 1 dimension


def default_root(source: str) -> Path:
    """Where ``source``'s files are looked for when ``data.root`` is not set: the Debian package's folder."""
    return LAYOUT[source]["debian_root"]


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of idx file ``path`` (gzip is detected from the content), checked against ``magic``."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ClspError(f"{path}: cannot be read as an idx file ({e}); reinstall the dataset") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise ClspError(
            f"{path}: not an idx file of {ndim}-d uint8 (magic {found}, expected {magic:08x}); reinstall the dataset"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ClspError(
            f"{path}: truncated or padded ({len(raw) - header} bytes of data, the header says {shape} = {expected}); "
            "reinstall the dataset"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_split(source: str, root: Path | None, split: str) -> ImageSet:
    """``split`` (train: 60,000, test: 10,000 images) of ``source`` (``fashion_mnist`` or ``mnist``) as uint8
    ``[N, 28, 28, 1]`` with labels 0-9 and the dataset's class names."""
    layout = LAYOUT[source]
    root = Path(root) if root is not None else default_root(source)
    folders = (root, root / layout["torchvision"] / "raw")
    for folder in folders:
        found = [_find(folder, name) for name in FILES[split]]
        if all(found):
            break
    else:
        package = layout["debian_package"]
        install = f"install Debian's {package} (apt-get install {package}) or " if package else ""
        raise ClspError(
            f"{source}: {FILES[split][0]}[.gz] not found in {root} or {folders[1]}; {install}set data.root to a "
            f"folder with the idx files or with torchvision's {layout['torchvision']}/raw/"
        )
    image_path, label_path = found
    images, labels = read_idx(image_path, IMAGES_MAGIC), read_idx(label_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise ClspError(
            f"{image_path}: {len(images)} images but {label_path.name} has {len(labels)} labels; reinstall the dataset"
        )
    if labels.size and labels.max() >= len(layout["classes"]):
        raise ClspError(f"{label_path}: label {labels.max()} is not one of the {len(layout['classes'])} classes")
    return ImageSet(
        name=f"{source}/{split}",
        images=images[..., None].copy(),  # np.frombuffer is read-only
        labels=labels.astype(np.int64),
        class_names=layout["classes"],
    )
