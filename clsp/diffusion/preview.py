"""A picture of what the blend weight does: anchors in the first column, one column of positives per w."""

from pathlib import Path

import numpy as np
import torch

from clsp.accelerator import pick_device
from clsp.atomic import atomic_write_text
from clsp.config import Config, config_to_yaml
from clsp.diffusion.sampler import SamplerSettings, images_to_model, model_to_images, sample_positives
from clsp.diffusion.train import training_images
from clsp.diffusion.unet import InterpolatingDenoiser, load_trained_unet
from clsp.errors import ClspError
from clsp.grid import save_image_grid
from clsp.progress import progress_bar


def preview_positives(cfg: Config, num_anchors: int, weights: list[float]) -> Path:
    """Write ``<run.output_dir>/diffusion/preview.png``: ``num_anchors`` rows of [anchor, positive at each w].

    Anchors are spread evenly over the training split; every column of a row uses the same noise, so the
    columns differ only in w. Steps, eta, solver, layers and precision come from ``cfg.positives``.
    """
    if not weights:
        raise ClspError("--weights: give at least one weight, e.g. --weights 0,0.1,0.5,1")
    images = training_images(cfg)
    indices = np.linspace(0, len(images) - 1, min(num_anchors, len(images))).round().astype(np.int64)
    anchors_uint8 = images[indices]
    unet = load_trained_unet(cfg)
    device = pick_device()
    denoiser = InterpolatingDenoiser(unet.to(device).eval(), cfg.positives.num_layers)
    settings = SamplerSettings.from_config(cfg, device)

    rows, cols = len(indices), len(weights)
    anchors = images_to_model(anchors_uint8).to(device).repeat_interleave(cols, 0)
    w = torch.tensor(weights, dtype=torch.float32).repeat(rows)
    image_indices = torch.from_numpy(indices).repeat_interleave(cols)
    with progress_bar() as bar:
        task = bar.add_task("preview", total=settings.num_steps)
        x = sample_positives(
            denoiser,
            anchors,
            w.to(device),
            image_indices,
            torch.zeros(rows * cols, dtype=torch.long),
            cfg.positives.seed,
            settings,
            denoiser.sample_shape,
            on_step=lambda: bar.advance(task),
        )
    positives = model_to_images(x).reshape(rows, cols, *anchors_uint8.shape[1:])
    grid = np.concatenate([anchors_uint8[:, None], positives], axis=1).reshape(-1, *anchors_uint8.shape[1:])
    out = cfg.layout.diffusion
    atomic_write_text(out / "preview_config.yaml", config_to_yaml(cfg))
    return save_image_grid(grid, out / "preview.png", nrow=cols + 1)
