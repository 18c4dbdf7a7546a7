"""``clsp features``: encode a split or an image folder with any backend and save the features."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from clsp.atomic import atomic_write, atomic_write_text, file_in_the_way
from clsp.config import Config
from clsp.data import ImageSet
from clsp.errors import ClspError
from clsp.features import extract_features
from clsp.runtime.load import Backend, load_encoder

SUFFIXES = (".npy", ".safetensors")


def encode_images(
    cfg: Config, backend: Backend, images: ImageSet, device: str | torch.device = "cpu", run: Path | None = None
) -> Tensor:
    """float32 ``[N, D]`` features of ``images`` (uint8 ``[N, S, S, C]``) from the run's encoder (``run``'s when
    given) on ``backend``: :func:`~clsp.runtime.load.load_encoder`, then :func:`encode_loaded`."""
    encoder, backbone = load_encoder(cfg, backend, device, run)
    return encode_loaded(encoder, backbone, images, cfg.export.max_batch, device, backend)


def encode_loaded(
    encoder: Callable[[Tensor], Tensor],
    backbone: dict[str, Any],
    images: ImageSet,
    batch_size: int,
    device: str | torch.device,
    backend: str,
) -> Tensor:
    """float32 ``[N, D]`` features of ``images`` from a loaded ``encoder`` (and its ``backbone.json``), normalised
    with the encoder's own ``mean``/``std``, ``batch_size`` images at a time (a TensorRT engine's largest batch)."""
    expected = (int(backbone["image_size"]), int(backbone["image_size"]), int(backbone["in_channels"]))
    if tuple(images.images.shape[1:]) != expected:
        raise ClspError(
            f"{images.name}: images are {list(images.images.shape[1:])} [H,W,C] but the encoder takes "
            f"{list(expected)}; set data.image_size={expected[0]} and data.channels={expected[2]}"
        )
    return extract_features(
        encoder,
        images.images,
        backbone["mean"],
        backbone["std"],
        batch_size=batch_size,
        device=device,
        description=f"features ({backend})",
    )


def check_features_path(path: Path) -> Path:
    """Refuse ``--out`` unless it names a ``.npy`` or ``.safetensors`` file that can be written: not a folder,
    no file where a parent folder must be."""
    path = Path(path)
    if path.is_dir():
        raise ClspError(f"--out {path}: is a folder; give a file name such as {path / 'features.npy'}")
    if path.suffix not in SUFFIXES:
        raise ClspError(f"--out {path}: use a .npy or .safetensors file name")
    blocking = file_in_the_way(path.parent)
    if blocking is not None:
        raise ClspError(f"--out {path}: '{blocking}' is a file, not a folder; choose another path")
    return path


def files_list_path(path: Path) -> Path:
    """Where :func:`save_features` lists the image files of ``path``'s rows: ``features.npy`` -> ``features.files.txt``."""
    return path.with_suffix(".files.txt")


def save_features(path: Path, features: Tensor, labels: np.ndarray | None, files: tuple[str, ...] = ()) -> Path:
    """Write ``features`` float32 ``[N, D]`` atomically: ``.npy`` holds the array; ``.safetensors`` holds
    ``features`` and, when known, int64 ``labels [N]``. ``files`` (image files, one per row, in row order) go to
    :func:`files_list_path`, one per line; a stale list from an earlier run is removed."""
    path = check_features_path(path)
    features = features.float().contiguous()
    if files:
        if len(files) != len(features):
            raise ValueError(f"{len(files)} file names for {len(features)} rows")
        atomic_write_text(files_list_path(path), "".join(f"{name}\n" for name in files))
    else:
        files_list_path(path).unlink(missing_ok=True)
    if path.suffix == ".npy":
        return atomic_write(path, lambda tmp: np.save(tmp, features.numpy()))
    tensors = {"features": features}
    if labels is not None:
        tensors["labels"] = torch.as_tensor(labels, dtype=torch.int64)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
