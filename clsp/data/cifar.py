"""CIFAR-10 and CIFAR-100 from torchvision's on-disk layout (the "python version" batches).

The batches are Python pickles. They are read with an allow-list unpickler that accepts only plain containers
and numpy arrays, so a tampered file cannot run code.
"""

import pickle
import warnings
from pathlib import Path

import numpy as np

from clsp.data.imageset import ImageSet
from clsp.errors import ClspError

LAYOUT = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "labels": "labels",
        "archive": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "labels": "fine_labels",
        "archive": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    },
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes this way; it only encodes text
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 renamed numpy.core to numpy._core
            return super().find_class(module, name)


def read_batch(path: Path) -> dict:
    """Read one CIFAR python batch as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ClspError(f"{path}: not a valid CIFAR python batch ({e}); delete it and download it again") from None
    if not isinstance(batch, dict):
        raise ClspError(f"{path}: not a valid CIFAR python batch (a {type(batch).__name__}, expected a dict)")
    return batch


def _download(source: str, root: Path) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset_class = CIFAR10 if source == "cifar10" else CIFAR100
    for train in (True, False):
        dataset_class(str(root), train=train, download=True)


def load_cifar_split(source: str, root: Path, split: str, download: bool = False) -> ImageSet:
    """CIFAR ``split`` (train: 50,000, test: 10,000 images) as uint8 ``[N, 32, 32, 3]`` with labels.

    ``root`` is the folder that holds ``cifar-10-batches-py/`` (or ``cifar-100-python/``), as for torchvision.
    """
    layout = LAYOUT[source]
    folder = Path(root) / layout["folder"]
    files = [folder / name for name in layout[split]]
    missing = [f for f in files if not f.is_file()]
    if missing and download:
        _download(source, Path(root))
        missing = [f for f in files if not f.is_file()]
    if missing:
        raise ClspError(
            f"{source}: {missing[0]} not found (looked in {folder} for {', '.join(layout[split])}); extract "
            f"{layout['archive']} into {root}, or set data.download=true (--download) on a machine with internet"
        )
    images, labels = [], []
    for path in files:
        batch = read_batch(path)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            batch_labels = np.asarray(batch[layout["labels"]], dtype=np.int64)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        except (KeyError, ValueError) as e:
            raise ClspError(f"{path}: not a {source} batch ({e!r} missing or malformed); download it again") from None
        if len(batch_labels) != len(images[-1]):
            raise ClspError(f"{path}: {len(images[-1])} images but {len(batch_labels)} labels; download it again")
        labels.append(batch_labels)
    meta_name, names_key = layout["meta"]
    meta_path = folder / meta_name
    class_names = tuple(read_batch(meta_path).get(names_key, ())) if meta_path.is_file() else ()
    return ImageSet(
        name=f"{source}/{split}",
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=np.concatenate(labels),
        class_names=class_names,
    )
