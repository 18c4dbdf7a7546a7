"""The splits of an image folder: per-split roots, ``train/`` + ``val/``|``test/`` sub-folders, or one folder split
deterministically; one class list for every split, and no split that evaluates on the images it trains on.

Three layouts, tried in this order:

- ``data.roots: {train: ..., val: ..., test: ...}``: each split its own folder;
- ``data.root`` holding a ``train/`` sub-folder and a ``val/`` or ``test/`` one: those are the splits (``test``
  reads ``test/``, else ``val/``; reported once);
- ``data.root`` alone: ``all`` is every image; it is split into ``train`` and ``test`` by ``data.test_fraction``
  and ``data.split_seed`` (as digits is), class-stratified when labelled (unlabelled: the held-out images calibrate
  ``clsp positives score``'s off-manifold test).
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clsp.config import DataConfig
from clsp.data.cache import DecodePlan, load_decoded
from clsp.data.folder import FileDecoder, folder_labels, list_image_folder
from clsp.data.imageset import ImageSet, stratified_split
from clsp.errors import ClspError
from clsp.progress import note


@dataclass(frozen=True)
class FolderSplit:
    """Where one split's images are: every image under ``root`` (``part`` "all"), or one side ("train", "test") of
    the stratified split of a one-split folder."""

    root: Path
    option: str
    part: str = "all"

    def overlaps(self, other: "FolderSplit") -> bool:
        """Whether the two can hold the same image file."""
        a, b = self.root.resolve(), other.root.resolve()
        nested = a == b or a in b.parents or b in a.parents
        return nested and (self.part == other.part or "all" in (self.part, other.part))


def folder_splits(cfg: DataConfig) -> dict[str, FolderSplit]:
    """Split name -> :class:`FolderSplit` for ``cfg`` (a ``folder`` source); only the splits the layout has."""
    if cfg.roots:
        return {split: FolderSplit(Path(root), f"data.roots.{split}") for split, root in cfg.roots.items()}
    root = Path(cfg.root)  # type: ignore[arg-type]
    sub = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()
    if "train" in sub and sub & {"val", "test"}:
        splits = {
            name: FolderSplit(root / name, f"data.root/{name}") for name in ("train", "val", "test") if name in sub
        }
        if "test" not in splits:
            splits["test"] = splits["val"]
        if root not in _REPORTED:
            _REPORTED.add(root)
            note(
                f"data.root {root} has split sub-folders: "
                + ", ".join(f"{k} = {v.root.name}/" for k, v in splits.items())
            )
        return splits
    return {part: FolderSplit(root, "data.root", part) for part in ("all", "train", "test")}


_REPORTED: set[Path] = set()
"""Roots whose detected split sub-folders were already reported by this process."""

Listing = tuple[list[str], list[str] | None]


def _class_names(splits: dict[str, FolderSplit], listings: dict[Path, Listing]) -> tuple[str, ...] | None:
    """The class list every split shares (the sorted sub-folder names), None when the folders are unlabelled.
    ``listings`` caches :func:`list_image_folder` per root."""
    classes = {}
    for split, where in splits.items():
        if where.root not in listings:
            listings[where.root] = list_image_folder(where.root, where.option)
        folders = listings[where.root][1]
        classes[split] = None if folders is None else set(folders)
    first_split, first = next(iter(classes.items()))
    for split, names in classes.items():
        if (names is None) != (first is None):
            labelled, unlabelled = (split, first_split) if first is None else (first_split, split)
            raise ClspError(
                f"{splits[labelled].option} has class sub-folders but {splits[unlabelled].option} does not; give "
                "every split the same class sub-folders, or none"
            )
    if first is None:
        return None
    every = set().union(*classes.values())
    for split, names in classes.items():
        missing = sorted(every - names)
        if missing:
            raise ClspError(
                f"{splits[split].option} '{splits[split].root}' has no images of class {missing[0]!r}"
                f"{f' (and {len(missing) - 1} more)' * (len(missing) > 1)}, which other splits have; every split "
                "needs the same class sub-folders"
            )
    return tuple(sorted(every))


def check_not_evaluated_on_training_images(cfg: DataConfig, splits: dict[str, FolderSplit]) -> None:
    """Refuse a ``test_split`` that shares images with ``train_split`` or ``labeled_split`` (checked when the test
    split is read: a folder may train on ``all`` when nothing is evaluated on it)."""
    test = splits.get(cfg.test_split)
    for field in ("labeled_split", "train_split"):
        other = splits.get(getattr(cfg, field))
        if test is not None and other is not None and test.overlaps(other):
            raise ClspError(
                f"data.test_split {cfg.test_split!r} and data.{field} {getattr(cfg, field)!r} read the same images "
                f"({test.option} '{test.root}'): the encoder would be scored on images it trained on; give the "
                "folder a test split (data.roots.test, or train/ and val/ sub-folders) or use train and test of one "
                "folder"
            )


def load_folder_split(cfg: DataConfig, split: str) -> ImageSet:
    """``split`` of the folder source as uint8 ``[N, S, S, C]`` (``S`` = ``cfg.image_size``, ``C`` =
    ``cfg.channels`` or 3), labels indexed in the class list shared by every split."""
    splits = folder_splits(cfg)
    if split not in splits:
        fix = f"add data.roots.{split}" if cfg.roots else f"add a {split}/ sub-folder beside train/, or use data.roots"
        raise ClspError(f"the image folder has no {split!r} split (it has: {', '.join(splits)}); {fix}")
    if split == cfg.test_split:
        check_not_evaluated_on_training_images(cfg, splits)
    where, listings = splits[split], {}
    class_names = _class_names({s: w for s, w in splits.items() if w.part == "all"}, listings)
    files, folders = listings[where.root]
    labels = None if folders is None else folder_labels(folders, class_names)  # type: ignore[arg-type]
    if where.part != "all":  # an unlabelled folder is one class: a seeded random split
        strata = np.zeros(len(files), np.int64) if labels is None else labels
        described = f"{where.option} '{where.root}'"
        train_rows, test_rows = stratified_split(
            strata, cfg.test_fraction, cfg.split_seed, described, class_names or ()
        )
        rows = train_rows if where.part == "train" else test_rows
        files, labels = [files[i] for i in rows], None if labels is None else labels[rows]
    key = {
        "source": "folder",
        "root": str(where.root.resolve()),
        "part": where.part,
        "split": [cfg.test_fraction, cfg.split_seed] if where.part != "all" else None,
        "files": _stat_digest(where.root, files),
        "class_names": class_names,
        "decode": [cfg.image_size, cfg.channels or 3, cfg.skip_bad_images, cfg.max_image_pixels],
    }
    plan = DecodePlan(
        items=files,
        decode=FileDecoder(
            where.root, cfg.image_size, cfg.skip_bad_images, where.option, cfg.channels or 3, cfg.max_image_pixels
        ),
        labels=labels,
        class_names=class_names or (),
        files=tuple(files),
    )
    return load_decoded(f"folder:{where.root.name}/{split}", key, lambda: plan, cfg.decode_workers, cfg.cache_dir)


def _stat_digest(root: Path, files: list[str]) -> str:
    """SHA-256 of every file's path, size and modification time (ns): a changed, added or removed file changes it."""
    base = f"{root}/"
    stats = (os.stat(base + name) for name in files)
    text = "".join(f"{name}\0{s.st_size}\0{s.st_mtime_ns}\n" for name, s in zip(files, stats, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()
