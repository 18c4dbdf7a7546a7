"""``data.source: torchvision``: a ``torchvision.datasets`` class by name, read from its local root.

Each clsp split maps to the class's own split argument (:data:`clsp.config.TORCHVISION_SPLITS`); a class with one
split is split class-stratified like a one-split folder. Images follow the folder rule
(:func:`~clsp.data.folder.picture_to_array`, then :func:`~clsp.data.folder.fit_size`); nothing is downloaded
unless ``data.download``.
"""

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clsp.config import TORCHVISION_SPLITS, DataConfig
from clsp.data.cache import DecodePlan, load_decoded
from clsp.data.folder import fit_size, picture_to_array
from clsp.data.imageset import ImageSet, stratified_split
from clsp.errors import ClspError


def open_torchvision_dataset(name: str, root: Path, arguments: dict[str, Any], download: bool) -> Any:
    """``torchvision.datasets.<name>(root, **arguments)``, with ``download`` where the class takes it; a dataset
    whose files are missing or broken is one line naming the root and the fix."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name)
    if "download" in inspect.signature(cls).parameters:
        arguments = {**arguments, "download": download}
    call = f"torchvision.datasets.{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
    try:
        return cls(str(root), **arguments)
    except (RuntimeError, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        fix = "" if download else ", or pass --download on a machine with internet"
        raise ClspError(
            f"data.root '{root}': {call} cannot read its files ({reason}); put {name} there in torchvision's "
            f"layout{fix}"
        ) from None


def class_names_of(dataset: Any, labels: np.ndarray | None) -> tuple[str, ...]:
    """The class names torchvision gives (``classes`` or ``categories``; ImageNet's first name per class), else the
    label numbers as text."""
    names = getattr(dataset, "classes", None) or getattr(dataset, "categories", None)
    if names:
        return tuple(name[0] if isinstance(name, tuple) else str(name) for name in names)
    return tuple(str(i) for i in range(0 if labels is None else int(labels.max()) + 1))


_OPEN: dict[tuple, Any] = {}
"""Datasets this process opened, by (name, root, arguments): a decode worker opens its dataset once."""


@dataclass(frozen=True)
class DatasetDecoder:
    """Decodes a chunk of dataset indices (picklable: decode worker processes open the dataset themselves) as uint8
    ``[n, S, S, channels]`` with their int64 labels."""

    name: str
    root: Path
    arguments: tuple[tuple[str, Any], ...]
    image_size: int | None
    channels: int

    def __call__(self, indices: Sequence[int]) -> tuple[np.ndarray, list[int], np.ndarray]:
        key = (self.name, self.root, self.arguments)
        if key not in _OPEN:
            _OPEN[key] = open_torchvision_dataset(self.name, self.root, dict(self.arguments), False)
        dataset, images, labels = _OPEN[key], [], []
        for i in indices:
            picture, label = dataset[i]
            first = images[0] if images else None
            images.append(
                fit_size(picture_to_array(picture, self.channels), self.image_size, first, f"{self.name}[{i}]")
            )
            labels.append(int(label))
        return np.stack(images), list(range(len(indices))), np.array(labels, dtype=np.int64)


def dataset_labels(dataset: Any) -> np.ndarray | None:
    """int64 labels of every item from the attribute torchvision keeps them in (``targets``, ``_labels``, ``labels``,
    ``y``), without decoding an image; None when the class keeps them elsewhere."""
    for attribute in ("targets", "_labels", "labels", "y"):
        values = getattr(dataset, attribute, None)
        if values is not None and len(values) == len(dataset):
            return np.asarray(values, dtype=np.int64)
    return None


def load_torchvision_split(cfg: DataConfig, split: str) -> ImageSet:
    """``split`` of torchvision ``cfg.dataset`` under ``cfg.root`` as uint8 ``[N, S, S, C]`` (``S`` =
    ``cfg.image_size`` or the native size, ``C`` = ``cfg.channels`` or 3) with int64 labels (None when the split is
    unlabelled, as STL-10's ``unlabeled``), decoded through the cache (``cfg.cache_dir``)."""
    import torchvision

    name, mapping = str(cfg.dataset), TORCHVISION_SPLITS[str(cfg.dataset)]
    root = Path(cfg.root).resolve()  # type: ignore[arg-type]
    arguments = {} if mapping is None else mapping[split]
    one_split = mapping is None and split != "all"
    channels = cfg.channels or 3
    key = {  # what decides the pixels, known without opening the dataset (a cache hit opens nothing)
        "source": "torchvision",
        "dataset": name,
        "root": str(root),
        "arguments": arguments,
        "split": [split, cfg.test_fraction, cfg.split_seed] if one_split else None,
        "torchvision": torchvision.__version__,
        "decode": [cfg.image_size, channels],
    }

    def plan() -> DecodePlan:
        dataset = open_torchvision_dataset(name, root, arguments, cfg.download)
        if len(dataset) == 0:
            raise ClspError(f"data.root '{cfg.root}': torchvision's {name} {split} split holds no images")
        rows, labels = np.arange(len(dataset)), dataset_labels(dataset)
        class_names = class_names_of(dataset, labels)
        if one_split:
            if labels is None:
                raise ClspError(f"torchvision {name}: its labels cannot be read without decoding; use split all")
            where = f"torchvision {name} in '{cfg.root}'"
            train_rows, test_rows = stratified_split(labels, cfg.test_fraction, cfg.split_seed, where, class_names)
            rows = train_rows if split == "train" else test_rows
        decoder = DatasetDecoder(name, root, tuple(sorted(arguments.items())), cfg.image_size, channels)
        return DecodePlan(rows.tolist(), decoder, class_names=class_names)

    return load_decoded(f"torchvision:{name}/{split}", key, plan, cfg.decode_workers, cfg.cache_dir)
