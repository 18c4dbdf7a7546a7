"""PNG grids of images, for people who would rather look than read."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from clsp.atomic import atomic_write

MIN_TILE_PIXELS = 64
"""Small images (digits are 16 px) are enlarged with nearest-neighbour so each tile is at least this big."""


def save_image_grid(images: np.ndarray, path: str | Path, nrow: int = 8, padding: int = 2) -> Path:
    """Save ``images`` (uint8 ``[N, H, W, C]``, C = 1 or 3) as one PNG grid with ``nrow`` images per row."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N,H,W,C] images, got {images.dtype} {images.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    scale = max(1, -(-MIN_TILE_PIXELS // max(images.shape[1:3])))
    if scale > 1:
        tensor = tensor.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    grid = make_grid(tensor, nrow=nrow, padding=padding, pad_value=255)
    array = grid.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if images.shape[3] == 1 else array)
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
