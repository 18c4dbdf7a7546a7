"""Any folder of images, searched recursively; class labels from first-level sub-folder names when present."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from clsp.data.imageset import ImageSet, resize_images, to_channels
from clsp.errors import ClspError
from clsp.progress import track, warn


def _visible_files(root: Path) -> list[Path]:
    """Files under ``root``, sorted, skipping hidden files and folders (names starting with a dot)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _read_image(path: Path, channels: int) -> np.ndarray:
    """uint8 ``[H, W, channels]``: decoded to RGB (palette expanded, alpha ignored), then :func:`to_channels`."""
    with Image.open(path) as picture:
        rgb = np.array(picture.convert("RGB"), dtype=np.uint8)
    return to_channels(rgb[None], channels)[0]


def load_image_folder(
    root: Path, image_size: int | None, skip_bad_images: bool = False, option: str = "data.root", channels: int = 3
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
    images, folders, bad = [], [], []
    for path in track(files, f"reading {root}"):
        try:
            array = _read_image(path, channels)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            if not skip_bad_images:
                raise ClspError(
                    f"{path}: not a readable image ({type(e).__name__}); remove it or set data.skip_bad_images=true "
                    "(--skip-bad-images)"
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
    return ImageSet(name=f"folder:{root.name}", images=np.stack(images), labels=labels, class_names=class_names)
