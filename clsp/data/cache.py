"""The decoded-image cache: a split of an image folder or a torchvision dataset is decoded once, in parallel worker
processes, into a uint8 ``[N, S, S, C]`` ``.npy`` under ``data.cache_dir``; later opens map it (never writing it).

An entry is a folder named by the SHA-256 of what decides its pixels (:func:`entry_name`): ``images.npy``,
``labels.npy`` (labelled splits), ``files.txt`` (image folders: the file of each row) and ``meta.json`` (name, class
names, the content fingerprint, the key). It is built in a temporary folder and renamed into place when complete,
under a file lock: of several processes (ranks of one node) one builds, the others wait and then map it. An entry
whose files do not match its ``meta.json`` (a truncated ``images.npy``) is rebuilt.
"""

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from clsp.data.imageset import ImageSet
from clsp.data.pixels import content_fingerprint
from clsp.data.rows import ImageRows
from clsp.errors import ClspError
from clsp.json_files import read_json_object
from clsp.progress import note, progress_bar, warn

CACHE_VERSION = 1
"""Bumped when the decode rule changes, so entries of an older rule are not reused."""
CHUNK_IMAGES = 256
"""Images one worker decodes per task."""

Decoded = tuple[np.ndarray, list[int], np.ndarray | None]
"""What a decoder returns for a chunk of items: uint8 ``[n, S, S, C]``, the indices (into the chunk) of the n items it
read (an unreadable file skipped with ``data.skip_bad_images`` is missing), their int64 labels or None."""


@dataclass(frozen=True)
class DecodePlan:
    """How to decode one split: ``items`` (file paths, dataset indices), split in chunks for ``decode`` (a picklable
    callable run in worker processes), and what is known without decoding."""

    items: Sequence[Any]
    decode: Callable[[Sequence[Any]], Decoded]
    labels: np.ndarray | None = None
    """int64 ``[len(items)]`` when known from the listing (folders); None: the decoder gives them (or none)."""
    class_names: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    """The row names (folders' relative paths), one per item; () for datasets."""


def entry_name(key: dict[str, Any]) -> str:
    """The cache entry's folder name: the SHA-256 (24 hex digits) of the canonical JSON of ``key``."""
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_decoded(
    name: str, key: dict[str, Any], plan: Callable[[], DecodePlan], workers: int, cache_dir: Path | None
) -> ImageSet:
    """The split named ``name``: mapped read-only from ``cache_dir``'s entry for ``key`` (everything that decides
    its pixels and labels, JSON-serialisable), or decoded by ``plan()`` into that entry first when it is missing or
    broken, or into memory when ``cache_dir`` is None. ``plan`` runs only to decode (opening a dataset can take
    long). ``workers`` processes decode (1: in this process; 0: one per core)."""
    workers = workers or os.cpu_count() or 1
    if cache_dir is None:
        return _decode_all(name, key, plan(), workers, None)
    entry = Path(cache_dir) / entry_name(key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(entry):
        images = _open_entry(entry)
        if images is None:
            building = entry.with_name(f".{entry.name}.building")
            shutil.rmtree(building, ignore_errors=True)
            shutil.rmtree(entry, ignore_errors=True)
            building.mkdir()
            try:
                _decode_all(name, key, plan(), workers, building)
                os.replace(building, entry)
            finally:
                shutil.rmtree(building, ignore_errors=True)
            images = _open_entry(entry)
            if images is None:
                raise ClspError(f"{entry}: the cache entry just built does not open; remove {cache_dir} and retry")
    return replace(images, name=name)


@contextmanager
def _build_lock(entry: Path) -> Iterator[None]:
    with open(entry.with_name(f".{entry.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(f"waiting for another process to finish decoding into {entry}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _open_entry(entry: Path) -> ImageSet | None:
    """The entry mapped read-only, or None when it is missing or does not match its meta.json (then rebuilt)."""
    if not (entry / "meta.json").is_file():
        return None
    try:
        meta = read_json_object(entry / "meta.json", "it is rebuilt")
        images = ImageRows.open(entry / "images.npy")
        labels = np.load(entry / "labels.npy") if meta["labelled"] else None
        files = tuple((entry / "files.txt").read_text(encoding="utf-8").splitlines()) if meta["named"] else ()
        if list(images.shape) != meta["shape"] or (labels is not None and labels.shape != images.shape[:1]):
            raise ValueError(f"shape {images.shape} against meta.json's {meta['shape']}")
        return ImageSet(meta["name"], images, labels, tuple(meta["class_names"]), files, meta["fingerprint"])
    except (ClspError, OSError, ValueError, KeyError, TypeError) as e:
        warn(f"{entry}: broken cache entry ({str(e).splitlines()[0] if str(e) else type(e).__name__}); decoding again")
        return None


def _decode_all(name: str, key: dict[str, Any], plan: DecodePlan, workers: int, entry: Path | None) -> ImageSet:
    """Decode every chunk of ``plan`` in order into one array: ``entry/images.npy`` (written as the chunks arrive, so
    memory holds a few chunks) or memory; returns the set with its fingerprint."""
    chunks = [plan.items[i : i + CHUNK_IMAGES] for i in range(0, len(plan.items), CHUNK_IMAGES)]
    pixels = _MemoryRows() if entry is None else _NpyRows(entry / "images.npy")
    read_rows: list[int] = []
    decoded_labels: list[np.ndarray] = []
    with pixels, _chunk_results(plan.decode, chunks, workers) as results, progress_bar() as bar:
        task = bar.add_task(f"decoding {name}", total=len(plan.items))
        for start, (array, read, labels) in zip(range(0, len(plan.items), CHUNK_IMAGES), results, strict=True):
            bar.advance(task, len(chunks[start // CHUNK_IMAGES]))
            if len(array) == 0:
                continue
            if pixels.shape is None:
                pixels.start((len(plan.items), *array.shape[1:]))
            elif array.shape[1:] != pixels.shape[1:]:
                raise ClspError(
                    f"{name}: item {start + read[0]} decodes to {array.shape[1:]}, the first to "
                    f"{pixels.shape[1:]}; set data.image_size to resize all images"
                )
            pixels.append(array)
            read_rows += [start + i for i in read]
            if labels is not None:
                decoded_labels.append(labels)
        if pixels.shape is None:
            raise ClspError(f"{name}: none of its {len(plan.items)} files is a readable image")
        images = pixels.finish(len(read_rows))
    if len(read_rows) < len(plan.items):
        kept = set(read_rows)
        first = next(i for i in range(len(plan.items)) if i not in kept)
        warn(f"skipped {len(plan.items) - len(read_rows)} unreadable file(s) of {name}, e.g. {plan.items[first]}")
    labels = plan.labels[read_rows] if plan.labels is not None else None
    if decoded_labels:
        labels = np.concatenate(decoded_labels).astype(np.int64)
        labels = None if (labels < 0).all() else labels  # STL-10's unlabeled split: every label -1
    files = tuple(plan.files[i] for i in read_rows) if plan.files else ()
    fingerprint = content_fingerprint(images, labels, CHUNK_IMAGES)
    if entry is not None:
        if labels is not None:
            np.save(entry / "labels.npy", labels)
        if files:
            (entry / "files.txt").write_text("".join(f + "\n" for f in files), encoding="utf-8")
        meta = {
            "name": name,
            "shape": list(images.shape),
            "labelled": labels is not None,
            "named": bool(files),
            "class_names": list(plan.class_names),
            "fingerprint": fingerprint,
            "key": key,
        }
        (entry / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
    return ImageSet(name, images, labels, plan.class_names, files, fingerprint)


class _MemoryRows:
    """Decoded rows collected in memory (no cache folder)."""

    shape: tuple[int, ...] | None = None

    def start(self, shape: tuple[int, ...]) -> None:
        self.shape, self.pixels, self.rows = shape, np.empty(shape, np.uint8), 0

    def append(self, array: np.ndarray) -> None:
        self.pixels[self.rows : self.rows + len(array)] = array
        self.rows += len(array)

    def finish(self, rows: int) -> np.ndarray:
        return self.pixels if rows == len(self.pixels) else self.pixels[:rows].copy()

    def __enter__(self) -> "_MemoryRows":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _NpyRows:
    """Decoded rows written in order to a ``.npy`` file (its pages go to the page cache, not this process), its
    header shrunk in place when some items were unreadable; read back mapped."""

    shape: tuple[int, ...] | None = None

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.file = open(self.path, "wb")  # noqa: SIM115 (closed by __exit__)
        self.offset = _write_header(self.file, shape)

    def append(self, array: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(array).data)

    def finish(self, rows: int) -> ImageRows:
        assert self.shape is not None
        if rows < self.shape[0]:
            self.file.seek(0)
            if _write_header(self.file, (rows, *self.shape[1:])) != self.offset:
                raise ClspError(f"{self.path}: the .npy header changed length; remove it and retry")
            self.file.truncate(self.offset + rows * int(np.prod(self.shape[1:])))
        self.file.close()
        return ImageRows.open(self.path)

    def __enter__(self) -> "_NpyRows":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shape is not None:
            self.file.close()


def _write_header(file: Any, shape: tuple[int, ...]) -> int:
    """Write the ``.npy`` header of a uint8 C-order array of ``shape``; its length in bytes (the data's offset)."""
    np.lib.format.write_array_header_1_0(file, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return file.tell()


@contextmanager
def _chunk_results(decode: Callable, chunks: list, workers: int) -> Iterator[Iterator[Decoded]]:
    """The decoded chunks in order: from ``workers`` spawned processes, or in this process for one worker or a
    single chunk (spawning costs more than it saves)."""
    if workers <= 1 or len(chunks) <= 1:
        yield map(decode, chunks)
        return
    # spawn, not fork: a forked child of a process that ran torch's OpenMP threads can hang in its first parallel op.
    # An executor, not a Pool: a worker that cannot start or dies breaks it with an error instead of a hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context, initializer=_worker_start) as pool:
        try:
            yield pool.map(decode, chunks)
        except BrokenProcessPool as e:
            raise ClspError(
                f"the image decode workers stopped ({e}); rerun with --set data.decode_workers=1 to decode in this "
                "process (spawned workers need a main module they can import: not `python -` or `python -c`)"
            ) from None


def _worker_start() -> None:
    import torch

    from clsp.interrupt import ignore_stop_signals

    torch.set_num_threads(1)  # one process per core
    ignore_stop_signals()  # the parent handles Ctrl-C / SIGTERM and stops the pool
