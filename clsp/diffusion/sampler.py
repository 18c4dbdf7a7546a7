"""The interpolating DDIM sampler (method.md 2.2-2.3): every step re-noises the anchor and blends features.

The loop takes any denoiser callable ``(x_t, anchor_t, t, w) -> eps``, so the torch module, ONNX Runtime
and TensorRT backends share it. All noise comes from one counter-based stream per ``(image index, candidate
index)`` (:mod:`clsp.diffusion.noise`), computed on the anchors' device, so a positive does not depend on the batch,
process or device it was made on.
"""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from torch import Tensor

from clsp.accelerator import has_native_bf16
from clsp.config import Config
from clsp.diffusion.noise import NoiseStreams
from clsp.errors import ClspError
from clsp.progress import warn

Denoiser = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``(x_t [B,C,H,W] float, anchor_t [B,C,H,W] float, t [B] int64, w [B] float) -> eps [B,C,H,W]``."""

Solver = Literal["ddim", "dpm-solver++"]
Scheduler = DDIMScheduler | DPMSolverMultistepScheduler


@dataclass(frozen=True)
class SamplerSettings:
    """Everything that decides a positive besides the model, the anchor and the seed."""

    num_steps: int
    eta: float
    solver: Solver
    precision: Literal["fp32", "bf16"]
    num_train_timesteps: int
    beta_start: float
    beta_end: float
    anchor_noise: Literal["fresh", "shared"] = "fresh"

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device | str = "cpu") -> "SamplerSettings":
        """``cfg.positives``' sampler on ``device``, with ``positives.precision: auto`` resolved for it."""
        p, d = cfg.positives, cfg.diffusion
        precision = sampling_precision(p.precision, torch.device(device))
        return cls(
            p.num_steps, p.eta, p.solver, precision, d.num_train_timesteps, d.beta_start, d.beta_end, p.anchor_noise
        )

    def check(self) -> None:
        """Raise ClspError, naming the config fields, for settings the sampler cannot run."""
        if self.num_steps > self.num_train_timesteps:
            raise ClspError(
                f"positives.num_steps={self.num_steps} exceeds diffusion.num_train_timesteps="
                f"{self.num_train_timesteps}; use at most {self.num_train_timesteps} steps, e.g. 100"
            )
        # diffusers steps from t to t - T // num_steps, which is the trailing grid only when it divides T.
        if self.solver == "ddim" and self.num_train_timesteps % self.num_steps:
            raise ClspError(
                f"positives.num_steps={self.num_steps} must divide diffusion.num_train_timesteps="
                f"{self.num_train_timesteps} for DDIM; use e.g. 50, 100 or 200"
            )


def sampling_precision(requested: Literal["auto", "fp32", "bf16"], device: torch.device) -> Literal["fp32", "bf16"]:
    """``positives.precision`` on ``device``: ``auto`` is bf16 where the device has bf16 units, fp32 elsewhere; an
    explicit bf16 without them is kept, with a warning (it is many times slower than fp32 there)."""
    native = has_native_bf16(device)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        _warn_emulated_bf16(device.type)
    return requested


@lru_cache(maxsize=2)
def _warn_emulated_bf16(device_type: str) -> None:
    warn(
        f"positives.precision=bf16 on a {device_type} without bf16 units: emulated, a UNet forward 11-27x slower "
        "than fp32 on an AVX2 CPU; set positives.precision to auto or fp32"
    )


@lru_cache(maxsize=8)
def alphas_cumprod(
    num_train_timesteps: int, beta_start: float, beta_end: float, dtype: torch.dtype = torch.float32
) -> Tensor:
    """ᾱ_t = prod_{s <= t} (1 - β_s) for t = 0 .. T-1, β linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020;
    method.md 1.2): CPU ``[T]`` computed in ``dtype``. In float32 these are diffusers' schedulers' values bit for bit
    (tests/diffusion/test_sampler.py checks it): the sampler and the export contract use them; the DDPM trainer
    computes in float64 and rounds once, as the reference trainer does. Shared (cached): do not modify it in place."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=dtype)
    return torch.cumprod(1 - betas, dim=0)


def step_alphas(scheduler: Scheduler, t: int) -> tuple[Tensor, Tensor]:
    """ᾱ_t and ᾱ_t' of the step from t on ``scheduler``'s trailing grid, t' = t - T / num_steps; ᾱ_t' = 1 after
    the last step (diffusers' ``set_alpha_to_one``). float32 CPU scalars: no host-device copy, no sync."""
    c = scheduler.config
    alphas = alphas_cumprod(c.num_train_timesteps, c.beta_start, c.beta_end)
    t_prev = t - c.num_train_timesteps // scheduler.num_inference_steps
    return alphas[t], alphas[t_prev] if t_prev >= 0 else torch.tensor(1.0)


def ddim_sigma(a: Tensor, a_prev: Tensor, eta: float) -> Tensor:
    """DDIM's σ_t for ᾱ_t = ``a``, ᾱ_t' = ``a_prev`` (Song et al. 2021, eq. 16); η = 1 is DDPM's posterior std."""
    return eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5


def make_scheduler(settings: SamplerSettings) -> Scheduler:
    """A fresh scheduler on the spec's grid: ``num_steps`` 100 of T 1000 visits t = 999, 989, ..., 9."""
    settings.check()
    common = {
        "num_train_timesteps": settings.num_train_timesteps,
        "beta_start": settings.beta_start,
        "beta_end": settings.beta_end,
        "beta_schedule": "linear",
        "timestep_spacing": "trailing",
    }
    if settings.solver == "ddim":
        scheduler = DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    else:
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    scheduler.set_timesteps(settings.num_steps)
    return scheduler


def check_inputs(anchors: Tensor, weight: Tensor, sample_shape: tuple[int, int, int] | None) -> None:
    """Raise ClspError unless anchors are float ``[B, *sample_shape]`` in [-1, 1] and weights ``[B]`` in [0, 1]."""
    if anchors.ndim != 4 or not anchors.is_floating_point():
        raise ClspError(
            f"anchors must be float [B,C,H,W] in [-1,1], got {anchors.dtype} {tuple(anchors.shape)}; "
            "convert uint8 images with images_to_model()"
        )
    if sample_shape is not None and tuple(anchors.shape[1:]) != tuple(sample_shape):
        raise ClspError(
            f"anchors have shape [C,H,W]={list(anchors.shape[1:])} but the UNet takes {list(sample_shape)}; "
            "set data.image_size (and the source's channels) to match the UNet"
        )
    if anchors.numel() and (anchors.min() < -1 or anchors.max() > 1):
        raise ClspError(
            f"anchors must lie in [-1,1], got [{anchors.min().item():.3g}, {anchors.max().item():.3g}]; "
            "convert uint8 images with images_to_model()"
        )
    if weight.shape != anchors.shape[:1]:
        raise ClspError(f"w must be a scalar or one value per anchor, got shape {tuple(weight.shape)}")
    if weight.numel() and (weight.min() < 0 or weight.max() > 1):
        raise ClspError(f"w (positives.weight) must lie in [0,1], got {weight.min().item():g}..{weight.max().item():g}")


def interpolation_step(
    denoiser: Denoiser,
    scheduler: Scheduler,
    x_t: Tensor,
    anchors: Tensor,
    t: int,
    w: Tensor,
    anchor_noise: Tensor,
    variance_noise: Tensor | None,
    eta: float,
    precision: Literal["fp32", "bf16"] = "fp32",
) -> Tensor:
    """One sampler step t -> t': re-noise the anchor with q(a_t | a_0), predict eps with blending, step.

    ``x_t``, ``anchors`` (clean, in [-1, 1]) and the noises are float32 ``[B, C, H, W]``; ``w`` float ``[B]``.
    ``variance_noise`` is DDIM's z (unused when ``eta`` is 0 or the solver is deterministic).
    """
    alpha_bar, _ = step_alphas(scheduler, t)
    anchor_t = alpha_bar.sqrt() * anchors + (1 - alpha_bar).sqrt() * anchor_noise
    timesteps = torch.full((x_t.shape[0],), t, dtype=torch.int64, device=x_t.device)
    autocast = torch.autocast(x_t.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with autocast:
        eps = denoiser(x_t, anchor_t, timesteps, w)
    eps = torch.as_tensor(eps, device=x_t.device).float()
    if isinstance(scheduler, DDIMScheduler):
        return ddim_step(scheduler, eps, t, x_t, eta, variance_noise)
    return scheduler.step(eps, t, x_t).prev_sample


def ddim_step(
    scheduler: DDIMScheduler, eps: Tensor, t: int, x_t: Tensor, eta: float, variance_noise: Tensor | None
) -> Tensor:
    """DDIM's update x_t -> x_t' on the trailing grid, t' = t - T / num_steps (method.md 2.3; Song et al. 2021,
    eq. 12), float32 ``[B, C, H, W]``. The same float32 operations in the same order as diffusers'
    ``DDIMScheduler.step``, so both give the same bits (tests/diffusion/test_sampler.py checks it)."""
    a, a_prev = step_alphas(scheduler, t)  # ᾱ_t, ᾱ_t'
    x0 = (x_t - (1 - a) ** 0.5 * eps) / a**0.5  # x̂_0, never clipped inside the loop
    sigma = ddim_sigma(a, a_prev, eta)  # σ_t
    direction = (1 - a_prev - sigma**2) ** 0.5 * eps  # the part of x_t' that points back along ε̂
    x_prev = a_prev**0.5 * x0 + direction
    if eta > 0:
        x_prev = x_prev + sigma * variance_noise  # fresh noise z ~ N(0, I), from the sample's own stream
    return x_prev


@torch.no_grad()
def sample_positives(
    denoiser: Denoiser,
    anchors: Tensor,
    weight: float | Tensor,
    image_indices: Tensor,
    candidate_indices: Tensor,
    seed: int,
    settings: SamplerSettings,
    sample_shape: tuple[int, int, int] | None = None,
    on_step: Callable[[], None] | None = None,
) -> Tensor:
    """Generate one synthetic positive per anchor.

    Args:
        denoiser: ``(x_t, anchor_t, t, w) -> eps``, e.g. :class:`~clsp.diffusion.unet.InterpolatingDenoiser`.
        anchors: float ``[B, C, H, W]`` in [-1, 1], clean images (on the device the denoiser runs on).
        weight: w in [0, 1], scalar or float ``[B]``; 1 is unconditional sampling.
        image_indices, candidate_indices: int ``[B]``, with ``seed`` the key of each sample's noise.
        settings: steps, eta, solver, precision and the training noise schedule.
        sample_shape: ``(C, H, W)`` the denoiser expects; None skips that check.
        on_step: called after every step (progress bars).

    Returns:
        float32 ``[B, C, H, W]`` clipped to [-1, 1].

    Each sample's stream is drawn in a fixed order: x_T, then per step the anchor's noise and, for DDIM
    with eta > 0, the step noise z. Changing that order changes every stored positive.
    """
    weight = torch.as_tensor(weight, dtype=torch.float32, device=anchors.device)
    if weight.ndim == 0:
        weight = weight.expand(anchors.shape[:1])
    check_inputs(anchors, weight, sample_shape)
    scheduler = make_scheduler(settings)
    stochastic = isinstance(scheduler, DDIMScheduler) and settings.eta > 0
    anchors = anchors.float()
    noise = NoiseStreams(seed, image_indices, candidate_indices)
    shape = tuple(anchors.shape[1:])
    x = noise.draw(shape, anchors.device)
    x_T = x
    for t in scheduler.timesteps.tolist():
        anchor_noise = x_T if settings.anchor_noise == "shared" else noise.draw(shape, anchors.device)
        variance_noise = noise.draw(shape, anchors.device) if stochastic else None
        x = interpolation_step(
            denoiser, scheduler, x, anchors, t, weight, anchor_noise, variance_noise, settings.eta, settings.precision
        )
        if on_step is not None:
            on_step()
    return x.clamp(-1, 1)


def images_to_model(images: np.ndarray | Tensor) -> Tensor:
    """uint8 ``[N, H, W, C]`` images -> float32 ``[N, C, H, W]`` in [-1, 1]."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ClspError(f"expected uint8 [N,H,W,C] images, got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1)


def model_to_uint8(x: Tensor) -> Tensor:
    """float ``[N, C, H, W]`` in [-1, 1] -> uint8 ``[N, H, W, C]`` on the same device, truncating like the reference
    (method.md 2.3)."""
    scaled = (x.detach().float().clamp(-1, 1) + 1) / 2 * 255
    return scaled.to(torch.uint8).permute(0, 2, 3, 1)


def model_to_images(x: Tensor) -> np.ndarray:
    """:func:`model_to_uint8` as a numpy array."""
    return model_to_uint8(x).cpu().numpy()
