"""DDPM training (method.md 1.2) with Accelerate and an EMA of the weights.

Run as ``accelerate launch clsp/diffusion/train.py --config configs/digits.yaml [--set k=v] [--resume]`` or
through ``clsp diffusion train``; both call :func:`train_diffusion`.

The loop, resume and interrupt handling are :mod:`clsp.loop`'s; every batch (its images, flips, timesteps and
noise) is a function of ``(run.seed, step, process)``, so a resumed run draws exactly what the uninterrupted run
would have drawn.
"""

import copy
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel
from torch import Tensor

from clsp.atomic import give_default_modes, replace_folder
from clsp.cli_args import run_script, script_parser
from clsp.config import Config, load_config, save_resolved_config
from clsp.data import ImageRows, as_rows, load_images
from clsp.diffusion.sampler import (
    SamplerSettings,
    alphas_cumprod,
    images_to_model,
    model_to_images,
    sample_positives,
)
from clsp.diffusion.unet import load_unet
from clsp.errors import ClspError
from clsp.grid import save_image_grid
from clsp.json_files import json_field
from clsp.loop import (
    GlobalBatchSampler,
    TrainingLoop,
    check_resumed_step,
    claimed_stage,
    keyed_generator,
    report,
    training_accelerator,
)
from clsp.progress import progress_bar
from clsp.run_folder import DATA_RESUME_SAFE
from clsp.training_state import PROGRESS_FILE, load_training_state


@dataclass
class TrainResult:
    """What a training run did and where it wrote."""

    step: int
    total_steps: int
    losses: list[float] = field(repr=False)
    """The loss of every step this call ran."""
    seconds: float
    interrupted: bool
    unet_dir: Path | None
    samples: Path | None
    state_dir: Path

    def summary(self) -> dict[str, object]:
        last = self.losses[-50:]
        return {
            "steps": f"{self.step} / {self.total_steps}" + (" (interrupted: rerun with --resume)" * self.interrupted),
            "loss (mean of last 50 steps)": f"{sum(last) / len(last):.4f}" if last else "-",
            "time": f"{self.seconds:.0f} s",
            "EMA UNet": self.unet_dir or "-",
            "samples": self.samples or "-",
            "resume state": self.state_dir,
        }


def _load_ema(ema: EMAModel, shadows: dict[str, Tensor], optimization_step: int, state_dir: Path) -> None:
    if len(shadows) != len(ema.shadow_params) or any(
        shadows.get(str(i), p).shape != p.shape for i, p in enumerate(ema.shadow_params)
    ):
        raise ClspError(f"{state_dir}/ema.safetensors: holds another model's EMA; start over with --overwrite")
    for i, p in enumerate(ema.shadow_params):
        p.copy_(shadows[str(i)])
    ema.optimization_step = optimization_step


def training_loss(unet: torch.nn.Module, alphas_cumprod: Tensor, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """ε-prediction MSE: ``x0`` float ``[B,C,H,W]`` in [-1,1], ``t`` int64 ``[B]``, ``noise`` like ``x0``."""
    alpha_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    return F.mse_loss(unet(x_t, t).sample.float(), noise)


def _staging_dir(target: Path) -> Path:
    """An empty folder beside ``target`` to write into before :func:`clsp.atomic.replace_folder`."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def save_samples(unet: UNet2DModel, cfg: Config, path: Path) -> Path:
    """Draw ``diffusion.num_samples`` unconditional DDIM samples (positives' steps and eta) into a PNG grid."""
    n = cfg.diffusion.num_samples
    device = next(unet.parameters()).device
    settings = SamplerSettings.from_config(cfg, device)
    shape = (n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)

    def plain(x_t: Tensor, anchor_t: Tensor, t: Tensor, w: Tensor) -> Tensor:
        return unet(x_t, t).sample

    with progress_bar() as bar:
        task = bar.add_task("unconditional samples", total=settings.num_steps)
        x = sample_positives(
            plain,
            torch.zeros(shape, device=device),
            1.0,
            torch.arange(n),
            torch.zeros(n, dtype=torch.long),
            cfg.run.seed,
            settings,
            on_step=lambda: bar.advance(task),
        )
    return save_image_grid(model_to_images(x), path, nrow=int(np.ceil(np.sqrt(n))))


def training_images(cfg: Config) -> ImageRows:
    """uint8 ``[N, H, W, C]``: the training split, resized to ``diffusion.image_size`` (when that is set) as it is
    read."""
    return as_rows(load_images(cfg.data, cfg.data.train_split).images).resized(cfg.diffusion.image_size)


RESUME_SECTIONS = ("data", "diffusion", "run.seed")
RESUME_SAFE = frozenset(
    {
        *DATA_RESUME_SAFE,
        *(f"diffusion.{k}" for k in ("epochs", "lr", "mixed_precision", "save_every_epochs", "num_samples")),
        "diffusion.pretrained",
    }
)
"""Settings a resumed DDPM run may change (see clsp.contrastive.train.RESUME_SAFE)."""


def train_diffusion(cfg: Config, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train the DDPM of ``cfg.diffusion`` on ``cfg.data``'s training split.

    Writes ``<run.output_dir>/unet/`` (EMA weights), ``diffusion/state/`` (resume state, saved every
    ``save_every_epochs`` and on Ctrl-C), ``diffusion/samples.png`` and ``diffusion/config.yaml``.
    ``resume`` continues from ``diffusion/state/`` with the same step count, EMA and optimizer state (refused if
    the settings changed beyond :data:`RESUME_SAFE`); without it an earlier run is only replaced with
    ``overwrite``. A non-finite loss or weights stop the run and never reach the saved state.
    """
    # the finished UNet counts too: a run whose state was deleted must not be replaced by a new one silently
    outputs = ("state", "../unet")
    accelerator = partial(training_accelerator, cfg.diffusion.mixed_precision, "diffusion")
    with claimed_stage(
        cfg.layout.diffusion, cfg, resume, overwrite, outputs, RESUME_SECTIONS, RESUME_SAFE, accelerator
    ) as acc:
        return _train(cfg, acc, resume)


def _train(cfg: Config, accelerator: Accelerator, resume: bool) -> TrainResult:
    d = cfg.diffusion
    started = time.perf_counter()
    out = cfg.layout
    state_dir = out.diffusion / "state"
    main, rank = accelerator.is_main_process, accelerator.process_index

    images = training_images(cfg)
    n, size, channels = images.shape[0], images.shape[1], images.shape[3]
    per_step = d.batch_size * accelerator.num_processes
    steps_per_epoch = n // per_step
    if steps_per_epoch == 0:
        raise ClspError(
            f"diffusion.batch_size={d.batch_size} x {accelerator.num_processes} processes exceeds the "
            f"{n} training images; lower diffusion.batch_size"
        )
    total_steps = d.epochs * steps_per_epoch

    torch.manual_seed(cfg.run.seed)
    unet = load_unet(d.unet, size, channels, d.dropout)
    unet.train()
    ema = EMAModel(unet.parameters(), decay=d.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    # diffusers' EMAModel ramps the decay as (1+n)/(10+n) up to ema_decay, where the reference holds 0.9999
    # from step 1; over the paper's ~200k steps the two agree, and short CPU runs need the ramp.
    optimizer = torch.optim.Adam(unet.parameters(), lr=d.lr)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(accelerator.device)
    step = 0
    if resume:
        progress, tensors = load_training_state(accelerator, state_dir, unet, optimizer, extra=("ema",))
        path, fix = state_dir / PROGRESS_FILE, "restore the state folder or start over with --overwrite"
        step = json_field(progress, "step", int, path, fix, minimum=0)
        _load_ema(
            ema, tensors["ema"], json_field(progress, "ema_optimization_step", int, path, fix, minimum=0), state_dir
        )
        check_resumed_step(step, total_steps, state_dir, "diffusion", d.epochs)
    elif main:
        shutil.rmtree(state_dir, ignore_errors=True)
    if main:
        save_resolved_config(cfg, out.diffusion)

    # float64, rounded once to float32, as the reference trainer does (the sampler uses diffusers' float32 values)
    alpha_bars = alphas_cumprod(d.num_train_timesteps, d.beta_start, d.beta_end, torch.float64).float()
    alpha_bars = alpha_bars.to(accelerator.device)

    def compute(batch: list[tuple[int, int]], step: int) -> tuple[Tensor, Tensor]:
        x0 = images_to_model(images[np.array([i for _, i in batch])])
        g = keyed_generator(cfg.run.seed, 1, step, rank)
        if d.hflip:
            x0 = torch.where(torch.rand(x0.shape[0], 1, 1, 1, generator=g) < 0.5, x0.flip(3), x0)
        t = torch.randint(0, d.num_train_timesteps, (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        x0, t, noise = (v.to(accelerator.device) for v in (x0, t, noise))
        # linear warm-up, then constant (method.md 1.2: LambdaLR factor min(step, warmup) / warmup)
        for group in optimizer.param_groups:
            group["lr"] = d.lr * (min(step, d.warmup_steps) / d.warmup_steps if d.warmup_steps else 1.0)
        loss = training_loss(unet, alpha_bars, x0, t, noise)
        return loss, loss.detach().float().reshape(1)

    def state(step: int) -> tuple[dict[str, int], dict[str, dict[str, Tensor]]]:
        shadows = {str(i): p for i, p in enumerate(ema.shadow_params)}
        return {"step": step, "ema_optimization_step": ema.optimization_step}, {"ema": shadows}

    loop = TrainingLoop(
        accelerator, unet, optimizer, state_dir, "diffusion", "DDPM training", total_steps,
        d.save_every_epochs * steps_per_epoch, state, grad_clip=d.grad_clip,
    )  # fmt: skip
    batches = GlobalBatchSampler(n, per_step, rank, accelerator.num_processes, cfg.run.seed, step, total_steps)

    def after_step(step: int, summed: Tensor) -> None:
        ema.step(accelerator.unwrap_model(unet).parameters())

    ran = loop.run(step, total_steps, batches, compute, after_step)

    unet_dir = samples = None
    if not ran.interrupted and main:
        final = copy.deepcopy(accelerator.unwrap_model(unet)).eval()
        ema.copy_to(final.parameters())
        unet_dir = out.unet
        tmp = _staging_dir(unet_dir)
        final.save_pretrained(tmp)
        give_default_modes(tmp)
        replace_folder(tmp, unet_dir)
        samples = save_samples(final, cfg, out.diffusion / "samples.png") if d.num_samples else None
    accelerator.wait_for_everyone()
    return TrainResult(
        ran.step, total_steps, ran.losses, time.perf_counter() - started, ran.interrupted, unet_dir, samples, state_dir
    )


def run_training(config: Path, overrides: list[str], resume: bool, overwrite: bool = False) -> TrainResult:
    """Load ``config`` with ``--set`` overrides, train, and print the summary (the CLI and the script); a run
    stopped by Ctrl-C or SIGTERM raises :class:`~clsp.interrupt.Interrupted` after its summary (exit 130 or 143)."""
    return report(train_diffusion(load_config(config, overrides), resume, overwrite), "DDPM training")


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__.splitlines()[0], "diffusion/state")
    args = parser.parse_args(argv)
    run_script(parser, lambda: run_training(args.config, args.overrides, args.resume, args.overwrite))


if __name__ == "__main__":
    main()
