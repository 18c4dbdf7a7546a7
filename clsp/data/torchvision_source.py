"""``data.source: torchvision``: a ``torchvision.datasets`` class by name, read from its local root.

Each clsp split maps to the class's own split argument (:data:`clsp.config.TORCHVISION_SPLITS`); a class with one
split is split class-stratified like a one-split folder. Images follow the folder rule
(:func:`~clsp.data.folder.picture_to_array`, then :func:`~clsp.data.folder.fit_size`); nothing is downloaded
unless ``data.download``.
"""

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from clsp.config import TORCHVISION_SPLITS, DataConfig
from clsp.data.folder import fit_size, picture_to_array
from clsp.data.imageset import ImageSet, stratified_split
from clsp.errors import ClspError
from clsp.progress import track


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


def load_torchvision_split(cfg: DataConfig, split: str) -> ImageSet:
    """``split`` of torchvision ``cfg.dataset`` under ``cfg.root`` as uint8 ``[N, S, S, C]`` (``S`` =
    ``cfg.image_size`` or the native size, ``C`` = ``cfg.channels`` or 3) with int64 labels (None when the split is
    unlabelled, as STL-10's ``unlabeled``)."""
    name, mapping = str(cfg.dataset), TORCHVISION_SPLITS[str(cfg.dataset)]
    arguments = {} if mapping is None else mapping[split]
    dataset = open_torchvision_dataset(name, Path(cfg.root), arguments, cfg.download)  # type: ignore[arg-type]
    images, labels, channels = [], [], cfg.channels or 3
    for i in track(range(len(dataset)), f"reading {name} {split}"):
        picture, label = dataset[i]
        images.append(
            fit_size(picture_to_array(picture, channels), cfg.image_size, images[0] if images else None, f"{name}[{i}]")
        )
        labels.append(int(label))
    if not images:
        raise ClspError(f"data.root '{cfg.root}': torchvision's {name} {split} split holds no images")
    pixels, targets = np.stack(images), np.array(labels, dtype=np.int64)
    targets = None if (targets < 0).all() else targets  # STL-10's unlabeled split: every label -1
    class_names = class_names_of(dataset, targets)
    if mapping is None and split != "all":
        where = f"torchvision {name} in '{cfg.root}'"
        train_rows, test_rows = stratified_split(targets, cfg.test_fraction, cfg.split_seed, where, class_names)
        rows = train_rows if split == "train" else test_rows
        pixels, targets = pixels[rows], targets[rows]
    return ImageSet(f"torchvision:{name}/{split}", pixels, targets, class_names)
