"""Any folder of images, searched recursively; class labels from first-level sub-folder names when present."""

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from clsp.data.imageset import ImageSet
from clsp.data.pixels import resize_images, to_channels
from clsp.errors import ClspError

MAX_IMAGE_PIXELS = 89_478_485
"""Default of ``data.max_image_pixels``: Pillow's own decompression-bomb threshold (1024 x 1024 x 1024 // 4 // 3)."""


def _visible_files(root: Path) -> list[str]:
    """Paths of the files under ``root``, relative to it with ``/`` between parts, sorted part by part; hidden
    files and folders (names starting with a dot) skipped, symlinked folders followed. Strings, not ``Path``
    objects, and one ``scandir`` per folder: 150,000 files list in well under a second."""
    files, folders = [], [""]
    while folders:
        prefix = folders.pop()
        with os.scandir(os.path.join(root, prefix)) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    folders.append(prefix + entry.name + "/")
                elif entry.is_file():  # regular files and links to them (d_type: no stat for plain files)
                    files.append(prefix + entry.name)
    files.sort(key=lambda name: name.replace("/", "\0"))  # part by part: "\0" sorts before any other character
    return files


class ImageTooLarge(ValueError):
    """An image file with more pixels than ``data.max_image_pixels``."""


def _open_unchecked(path: Path) -> Image.Image:
    # Pillow's own bomb check warns past 89 M pixels and fails past 179 M with a traceback-only error; clsp checks
    # against data.max_image_pixels itself, from the header, before anything is decoded.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def read_image(path: Path, channels: int, max_pixels: int) -> np.ndarray:
    """uint8 ``[H, W, channels]`` of the image file ``path`` (:func:`picture_to_array`). Raises
    :class:`ImageTooLarge` past ``max_pixels``, from the header, before decoding."""
    with _open_unchecked(path) as picture:
        width, height = picture.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height} pixels")
        return picture_to_array(picture, channels)


def picture_to_array(picture: Image.Image, channels: int) -> np.ndarray:
    """uint8 ``[H, W, channels]``: decoded to RGB (palette expanded, alpha ignored; 16-bit grey scaled to 8 bits as
    ``(v * 255 + 32767) // 65535``), then :func:`to_channels`."""
    if picture.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit grey (PNG opens as I;16 or I)
        wide = np.asarray(picture, dtype=np.int64).clip(0, 65535)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        rgb = np.array(picture.convert("RGB"), dtype=np.uint8)
    return to_channels(rgb[None], channels)[0]


def fit_size(array: np.ndarray, image_size: int | None, first: np.ndarray | None, where: object) -> np.ndarray:
    """uint8 ``[H, W, C]`` resized to ``image_size`` (shorter side, centre crop); with ``image_size`` None it must be
    the size of the ``first`` image read (None: it is the first), else a one-line error naming ``where``."""
    if image_size is not None:
        return resize_images(array[None], image_size)[0]
    if first is not None and array.shape != first.shape:
        raise ClspError(
            f"{where}: size {array.shape[1]}x{array.shape[0]} differs from the first image's "
            f"{first.shape[1]}x{first.shape[0]}; set data.image_size to resize all images"
        )
    return array


def folder_labels(folders: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """int64 ``[N]``: each file's class sub-folder (``folders``, from :func:`list_image_folder`) as its index in
    ``class_names``."""
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[f] for f in folders], dtype=np.int64)


def list_image_folder(root: Path, option: str = "data.root") -> tuple[list[str], list[str] | None]:
    """The visible files under ``root`` (relative paths, sorted; :func:`_visible_files`) and, when every one sits
    in a first-level sub-folder, that sub-folder's name for each (its class); None when every file sits directly in
    ``root`` (unlabelled). Errors name ``root`` as the ``option`` that gave it. Nothing is decoded."""
    root = Path(root)
    if not root.is_dir():
        raise ClspError(f"{option} '{root}' is not a folder; point {option} at a folder of images")
    files = _visible_files(root)
    if not files:
        raise ClspError(f"{option} '{root}' holds no files; put images (PNG, JPEG, ...) in it")
    in_subfolder = ["/" in name for name in files]
    if any(in_subfolder) and not all(in_subfolder):
        top, nested = files[in_subfolder.index(False)], files[in_subfolder.index(True)]
        raise ClspError(
            f"{root}: images both at the top level ({top}) and in sub-folders ({nested}); "
            "put every image in a class sub-folder, or none"
        )
    return files, ([name.split("/", 1)[0] for name in files] if in_subfolder[0] else None)


@dataclass(frozen=True)
class FileDecoder:
    """Decodes a chunk of image files (paths relative to ``root``; picklable: decode worker processes run it) as
    uint8 ``[n, S, S, channels]``
    (:func:`read_image`, then :func:`fit_size` to ``image_size``), with the indices of the files it read (an
    unreadable one is skipped with ``skip_bad_images``, else a one-line error naming it and the ``option`` fix)."""

    root: Path
    image_size: int | None
    skip_bad_images: bool = False
    option: str = "data.root"
    channels: int = 3
    max_pixels: int = MAX_IMAGE_PIXELS

    def __call__(self, files: Sequence[str]) -> tuple[np.ndarray, list[int], None]:
        images, read = [], []
        for i, name in enumerate(files):
            path = self.root / name
            try:
                array = read_image(path, self.channels, self.max_pixels)
            except ImageTooLarge as e:
                raise ClspError(
                    f"{path}: {e}, more than data.max_image_pixels={self.max_pixels}; shrink or remove the file, or "
                    "raise data.max_image_pixels (decoding takes about 4 bytes per pixel)"
                ) from None
            except (UnidentifiedImageError, OSError, ValueError) as e:
                if not self.skip_bad_images:
                    skip = "--skip-bad-images" if self.option == "data.root" else "--set data.skip_bad_images=true"
                    raise ClspError(
                        f"{path}: not a readable image ({type(e).__name__}); remove it or skip unreadable files ({skip})"
                    ) from None
                continue
            images.append(fit_size(array, self.image_size, images[0] if images else None, path))
            read.append(i)
        return (np.stack(images) if images else np.zeros((0, 1, 1, self.channels), np.uint8)), read, None


def load_image_folder(
    root: Path,
    image_size: int | None,
    skip_bad_images: bool = False,
    option: str = "data.root",
    channels: int = 3,
    max_pixels: int = MAX_IMAGE_PIXELS,
    workers: int = 1,
) -> ImageSet:
    """Every image under ``root`` (:func:`list_image_folder`) decoded into memory by ``workers`` processes
    (:class:`FileDecoder`). Labels are the first-level sub-folder names (sorted, indexed from 0) when every image
    sits in one, else the set is unlabelled."""
    from clsp.data.cache import DecodePlan, load_decoded

    root = Path(root)
    files, folders = list_image_folder(root, option)
    class_names = tuple(sorted(set(folders))) if folders is not None else ()
    plan = DecodePlan(
        items=files,
        decode=FileDecoder(root, image_size, skip_bad_images, option, channels, max_pixels),
        labels=None if folders is None else folder_labels(folders, class_names),
        class_names=class_names,
        files=tuple(files),
    )
    return load_decoded(f"folder:{root.name}", {}, lambda: plan, workers, None)
