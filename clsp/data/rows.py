"""Images read on access: rows of a uint8 ``[N, H, W, C]`` array (in memory, or a ``.npy`` mapped read-only),
optionally a subset of its rows and resized, so that no stage holds a private copy of a split.

Reading a mapped file puts its pages in the reading process's resident set (the kernel keeps them in the page cache
either way), and a fault may map a whole large page-cache folio around the row read (up to 2 MB); :class:`ImageRows`
hands the :data:`RELEASE_ALIGN`-aligned windows it read back right after copying them out, so the resident set of a
stage that walks a whole split (an epoch, a feature pass, a fingerprint) stays near its batch, not the split.
"""

import mmap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clsp.data.pixels import resize_images

RELEASE_ALIGN = 2 << 20
"""Pages of a mapped file are released in windows of this alignment (the largest folio a fault maps)."""

Index = int | slice | np.ndarray | torch.Tensor | list[int]


def map_npy(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """The uint8 C-order array of the ``.npy`` at ``path``, mapped read-only (shared: its pages are the page
    cache's), and its mapping (the whole file: the array starts at its header's length). ValueError when the file
    is not such an array or is shorter than its header says."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version}, not 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
        if dtype != np.uint8 or fortran:
            raise ValueError(f"{dtype} {'Fortran' if fortran else 'C'}-order array, not uint8 C-order")
        size = offset + int(np.prod(shape))
        if path.stat().st_size != size:
            raise ValueError(f"{path.stat().st_size} bytes, its header says {size}")
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return mapping, np.frombuffer(mapping, np.uint8, int(np.prod(shape)), offset).reshape(shape)


class ImageRows:
    """uint8 ``[N, size, size, C]`` images: rows ``rows`` (all when None) of ``source`` ``[M, H, W, C]``, resized to
    ``size`` (antialiased bilinear, as :func:`~clsp.data.pixels.resize_images`) when it is set, read when indexed.

    Indexing with an int gives ``[size, size, C]``, with a slice or an integer array/tensor ``[n, size, size, C]``;
    both are fresh writable arrays. Pickles as its file path when mapped (a spawned worker maps the file again).
    """

    def __init__(
        self,
        source: np.ndarray,
        rows: np.ndarray | None = None,
        size: int | None = None,
        path: Path | None = None,
        mapping: mmap.mmap | None = None,
    ) -> None:
        if source.dtype != np.uint8 or source.ndim != 4:
            raise ValueError(f"ImageRows needs uint8 [N,H,W,C], got {source.dtype} {source.shape}")
        self.source, self.rows, self.size, self.path, self._mapping = source, rows, size, path, mapping
        h, w, c = source.shape[1:]
        self.shape = (len(source) if rows is None else len(rows), *((size, size) if size else (h, w)), c)

    @classmethod
    def open(cls, path: Path) -> "ImageRows":
        """Every row of the uint8 ``.npy`` at ``path``, mapped read-only (see :func:`map_npy`)."""
        mapping, array = map_npy(path)
        return cls(array, path=path, mapping=mapping)

    dtype = np.dtype(np.uint8)
    ndim = 4

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def select(self, rows: np.ndarray) -> "ImageRows":
        """These images' rows ``rows`` (int ``[n]``), still read on access."""
        picked = np.asarray(rows, np.int64) if self.rows is None else self.rows[rows]
        return ImageRows(self.source, picked, self.size, self.path, self._mapping)

    def resized(self, size: int | None) -> "ImageRows":
        """These images resized to ``size`` on access (unchanged when None or their size)."""
        if size is None or self.shape[1:3] == (size, size):
            return self
        size = None if self.source.shape[1:3] == (size, size) else size  # from the source, never resized twice
        return ImageRows(self.source, self.rows, size, self.path, self._mapping)

    def __getitem__(self, index: Index) -> np.ndarray:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        single = isinstance(index, int | np.integer)
        if isinstance(index, slice):
            at = np.arange(len(self))[index]
        else:
            at = np.asarray([index] if single else index, np.int64)
            if at.ndim != 1:
                raise TypeError(f"ImageRows take an int, a slice or a 1-D integer array, not {type(index).__name__}")
        rows = at if self.rows is None else self.rows[at]
        contiguous = isinstance(index, slice) and self.rows is None and (index.step or 1) == 1
        # a copy either way, so that nothing holds on to the map's pages
        out = self.source[rows[0] : rows[-1] + 1].copy() if contiguous and len(rows) else self.source[rows]
        self._release(rows)
        if self.size is not None:
            out = resize_images(out, self.size)
        return out[0] if single else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def _release(self, rows: np.ndarray) -> None:
        """Drop from this process's resident set the aligned windows of the mapped file that ``rows`` (source row
        indices) lie in; the page cache keeps them for the next reader."""
        if self._mapping is None or not len(rows):
            return
        row_bytes = int(np.prod(self.source.shape[1:]))
        offset = len(self._mapping) - len(self.source) * row_bytes  # the .npy header
        first = np.sort((offset + rows * row_bytes) // RELEASE_ALIGN)
        last = np.sort((offset + (rows + 1) * row_bytes - 1) // RELEASE_ALIGN)
        reach = np.maximum.accumulate(last)
        breaks = np.flatnonzero(first[1:] > reach[:-1] + 1) + 1  # merge overlapping and adjacent windows
        for start, end in zip(first[np.r_[0, breaks]], reach[np.r_[breaks - 1, len(first) - 1]], strict=True):
            begin = int(start) * RELEASE_ALIGN
            self._mapping.madvise(
                mmap.MADV_DONTNEED, begin, min((int(end) + 1) * RELEASE_ALIGN, len(self._mapping)) - begin
            )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__, _mapping=None)
        if self.path is not None:
            state["source"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.path is not None:
            self._mapping, self.source = map_npy(self.path)


def as_rows(images: "np.ndarray | ImageRows") -> ImageRows:
    """``images`` as :class:`ImageRows` (an in-memory array wrapped, not copied)."""
    return images if isinstance(images, ImageRows) else ImageRows(images)
