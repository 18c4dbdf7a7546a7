"""Any folder of images, searched recursively; class labels from first-level sub-folder names when present."""

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from clsp.data.imageset import ImageSet, resize_images, to_channels
from clsp.errors import ClspError
from clsp.progress import track, warn

MAX_IMAGE_PIXELS = 89_478_485
"""Default of ``data.max_image_pixels``: Pillow's own decompression-bomb threshold (1024 x 1024 x 1024 // 4 // 3)."""


def _visible_files(root: Path) -> list[Path]:
    """Files under ``root``, sorted, skipping hidden files and folders (names starting with a dot)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


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
    """uint8 ``[H, W, channels]``: decoded to RGB (palette expanded, alpha ignored; 16-bit grey scaled to 8 bits as
    ``(v * 255 + 32767) // 65535``), then :func:`to_channels`. Raises :class:`ImageTooLarge` past ``max_pixels``."""
    with _open_unchecked(path) as picture:
        width, height = picture.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height} pixels")
        if picture.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit grey (PNG opens as I;16 or I)
            wide = np.asarray(picture, dtype=np.int64).clip(0, 65535)
            grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
            rgb = np.repeat(grey[..., None], 3, axis=2)
        else:
            rgb = np.array(picture.convert("RGB"), dtype=np.uint8)
    return to_channels(rgb[None], channels)[0]


def load_image_folder(
    root: Path,
    image_size: int | None,
    skip_bad_images: bool = False,
    option: str = "data.root",
    channels: int = 3,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ImageSet:
    """Every image under ``root`` as uint8 ``[N, S, S, channels]``; errors name ``root`` as the ``option`` that
    gave it. ``channels`` 1 makes every image grey, 3 RGB (the rule: ``DataConfig.channels``), before resizing.

    Images are resized on the shorter side and centre-cropped to ``image_size``; with ``image_size`` None they
    must all share one size. Labels are the first-level sub-folder names (sorted, indexed from 0) when every
    image sits in one; with every image directly in ``root`` the set is unlabelled.
    """
    root = Path(root)
    if not root.is_dir():
        raise ClspError(f"{option} '{root}' is not a folder; point {option} at a folder of images")
    files = _visible_files(root)
    if not files:
        raise ClspError(f"{option} '{root}' holds no files; put images (PNG, JPEG, ...) in it")
    in_subfolder = [len(p.relative_to(root).parts) > 1 for p in files]
    if any(in_subfolder) and not all(in_subfolder):
        top = files[in_subfolder.index(False)]
        nested = files[in_subfolder.index(True)]
        raise ClspError(
            f"{root}: images both at the top level ({top.name}) and in sub-folders ({nested.relative_to(root)}); "
            "put every image in a class sub-folder, or none"
        )
    images, folders, read, bad = [], [], [], []
    for path in track(files, f"reading {root}"):
        try:
            array = read_image(path, channels, max_pixels)
        except ImageTooLarge as e:
            raise ClspError(
                f"{path}: {e}, more than data.max_image_pixels={max_pixels}; shrink or remove the file, or raise "
                "data.max_image_pixels (decoding takes about 4 bytes per pixel)"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            if not skip_bad_images:
                skip = "--skip-bad-images" if option == "data.root" else "--set data.skip_bad_images=true"
                raise ClspError(
                    f"{path}: not a readable image ({type(e).__name__}); remove it or skip unreadable files ({skip})"
                ) from None
            bad.append(path)
            continue
        if image_size is not None:
            array = resize_images(array[None], image_size)[0]
        elif images and array.shape != images[0].shape:
            raise ClspError(
                f"{path}: size {array.shape[1]}x{array.shape[0]} differs from the first image's "
                f"{images[0].shape[1]}x{images[0].shape[0]}; set data.image_size to resize all images"
            )
        images.append(array)
        read.append(str(path.relative_to(root)))
        folders.append(path.relative_to(root).parts[0])
    if bad:
        warn(f"skipped {len(bad)} unreadable file(s) under {root}, e.g. {bad[0]}")
    if not images:
        raise ClspError(f"{option} '{root}': none of its {len(files)} files is a readable image")
    labels, class_names = None, ()
    if all(in_subfolder):
        class_names = tuple(sorted(set(folders)))
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([index[f] for f in folders], dtype=np.int64)
    return ImageSet(
        name=f"folder:{root.name}", images=np.stack(images), labels=labels, class_names=class_names, files=tuple(read)
    )
