"""The contract part of ``metadata.json``: what a runner outside clsp must do around an exported model to get
clsp's results, i.e. the encoder's preprocessing and output, and the denoiser's whole sampler.

Numbers come from the code that runs (the scheduler's config and grid, the encoder's ``backbone.json``); the rules
are stated in words and formulas. ``runtime/reference_client.py`` implements them with numpy and onnxruntime only,
and its tests hold them to clsp's own results.
"""

from typing import Any

from diffusers import DDIMScheduler

from clsp.data.pixels import LUMA_WEIGHTS
from clsp.diffusion.sampler import SamplerSettings, alphas_cumprod, ddim_sigma, make_scheduler, step_alphas

RESIZE_RULE = (
    "unless the image is already image_size x image_size (S): scale = S / min(H, W); resize to "
    "(max(S, round(H * scale)), max(S, round(W * scale))) with Python's round (half to even) by antialiased "
    "bilinear interpolation on float32 values 0..255, as torch.nn.functional.interpolate(mode='bilinear', "
    "antialias=True, align_corners=False) on the CPU: per axis, in = input size, out = output size, "
    "s = in / out, support = max(s, 1), output pixel i has centre c = s * (i + 0.5) (half-pixel centres) and "
    "taps j = int(c - support + 0.5) .. int(c + support + 0.5) - 1 clipped to the image, weighted by the "
    "triangle max(0, 1 - |j - c + 0.5| / max(s, 1)) normalised to sum 1; the width pass runs first, then the "
    "height pass, each accumulated tap by tap in float32 with fused multiply-adds (other arithmetic can round a "
    "value within float32 precision of .5 the other way); then the centre crop rows (H' - S) // 2 .. + S and "
    "columns (W' - S) // 2 .. + S; then round half to even and clamp to 0..255 (uint8)"
)


def encoder_contract(backbone: dict[str, Any]) -> dict[str, Any]:
    """How an image becomes the encoder's input, and what its output is (``backbone``: the run's backbone.json)."""
    grey = " + ".join(f"{w} {c}" for w, c in zip(LUMA_WEIGHTS, "RGB", strict=True))
    return {
        "preprocessing": {
            "decode": "image files: PIL Image.open(path).convert('RGB') -> uint8 [H, W, 3] (palette expanded, "
            "alpha dropped without compositing, grey repeated; 16-bit grey (modes I;16, I) scaled to 8 bits as "
            "(v * 255 + 32767) // 65535, then repeated); more than 89,478,485 pixels (data.max_image_pixels) "
            "refused from the header; uint8 arrays [H, W, C] skip this",
            "channels": f"3: RGB as decoded; 1: grey = ({grey} + 500) // 1000 in integers on the uint8 values "
            "(ITU-R 601 luma; grey images keep their values), before resizing",
            "resize": RESIZE_RULE,
            "value_range": "x = uint8 / 255 in float32 (0..1)",
            "normalise": "(x - model.mean[c]) / model.std[c] per channel c",
            "layout": "NCHW",
            "dtype": "float32",
        },
        "output": {
            "features": f"float32 [batch, {backbone['feature_dim']}]: the {backbone.get('backbone')} backbone's "
            "features (global-average-pooled, before the SSL projector head), not L2-normalised; the linear "
            "probe and k-NN of clsp eval use these (k-NN after L2 normalisation)",
        },
    }


def denoiser_contract(settings: SamplerSettings, weight: float) -> dict[str, Any]:
    """The whole interpolating sampler clsp runs around the denoiser: schedule, grid, rules and noise.

    Raises ClspError (from :func:`make_scheduler`) for settings the sampler cannot run.
    """
    scheduler = make_scheduler(settings)
    timesteps = [int(t) for t in scheduler.timesteps]
    stride = settings.num_train_timesteps // settings.num_steps
    previous = [t - stride for t in timesteps]
    alphas = alphas_cumprod(settings.num_train_timesteps, settings.beta_start, settings.beta_end)
    ddim = isinstance(scheduler, DDIMScheduler)
    sampler = {
        "solver": settings.solver,
        "num_steps": settings.num_steps,
        "eta": settings.eta,
        "weight": weight,
        "num_train_timesteps": settings.num_train_timesteps,
        "beta_start": settings.beta_start,
        "beta_end": settings.beta_end,
        "beta_schedule": scheduler.config.beta_schedule,
        "timestep_spacing": scheduler.config.timestep_spacing,
        "prediction_type": scheduler.config.prediction_type,
        "clip_sample": getattr(scheduler.config, "clip_sample", False),
        "set_alpha_to_one": getattr(scheduler.config, "set_alpha_to_one", None),
        "timesteps": timesteps,
        "alphas_cumprod": [float(alphas[t]) for t in timesteps],
        "alphas_cumprod_prev": [float(alphas[t]) if t >= 0 else 1.0 for t in previous] if ddim else None,
        "coefficients": _ddim_coefficients(scheduler, timesteps, settings.eta) if ddim else None,
        "anchor_noise": settings.anchor_noise,
        "rules": _ddim_rules(stride, settings.anchor_noise) if ddim else _dpm_rules(settings.anchor_noise),
    }
    return {
        "sampler": sampler,
        "anchors": "uint8 [H, W, C] images at model.image_size with model.channels channels (clsp: the training "
        "split through the encoder's decode, channels and resize rules) -> anchor = uint8 / 127.5 - 1: float32 "
        "NCHW in [-1, 1], clean",
        "output": "x after the last step: clamp to [-1, 1], then uint8 = trunc((x + 1) / 2 * 255) in float32 "
        "(truncation, not rounding), HWC",
    }


def _ddim_coefficients(scheduler: DDIMScheduler, timesteps: list[int], eta: float) -> dict[str, list[float]]:
    """Each step's float32 factors as clsp's sampler computes them on the CPU: torch's sqrt need not round like
    IEEE's, so a client that uses these instead of its own square roots gets clsp's arithmetic exactly."""
    rows = []
    for t in timesteps:
        a, a_prev = step_alphas(scheduler, t)
        sigma = ddim_sigma(a, a_prev, eta)
        factors = (a**0.5, (1 - a) ** 0.5, a_prev**0.5, sigma, (1 - a_prev - sigma**2) ** 0.5)
        rows.append([float(f) for f in factors])
    names = ("sqrt(a)", "sqrt(1 - a)", "sqrt(a')", "sigma", "sqrt(1 - a' - sigma^2)")
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def _anchor_noise_rule(mode: str) -> str:
    if mode == "shared":
        return "anchor_noise = x_T at every step (anchor_noise: shared; the caller passes x_T for every step)"
    return "a fresh anchor_noise every step (anchor_noise: fresh, the paper's)"


def _ddim_rules(stride: int, anchor_noise: str) -> dict[str, str]:
    return {
        "alphas_cumprod": "betas = linspace(beta_start, beta_end, num_train_timesteps) (float32), alphas_cumprod "
        "= cumprod(1 - betas); alphas_cumprod_prev of the last step is 1 (set_alpha_to_one); both listed above "
        "as float32 values per step, and coefficients lists each step's float32 factors of the formulas below as "
        "clsp computes them (use them to get clsp's arithmetic exactly)",
        "timesteps": f"trailing: t_i = num_train_timesteps - 1 - i * {stride} for i = 0 .. num_steps - 1; each "
        f"step goes t -> t' = t - {stride}, the last to t' = -1",
        "start": "x = x_T (noise)",
        "anchor_t": "every step: anchor_t = sqrt(a) * anchor + sqrt(1 - a) * anchor_noise with a = "
        f"alphas_cumprod[t] and {_anchor_noise_rule(anchor_noise)} (the anchor is re-noised, never denoised)",
        "eps": "eps = model(x_t=x, anchor_t=anchor_t, t=[t] * batch int64, w=[weight] * batch float32): epsilon "
        "prediction; w weights the random sample's features against the anchor's (1: plain sampling)",
        "step": "a = alphas_cumprod[t], a' = alphas_cumprod_prev; x0 = (x - sqrt(1 - a) * eps) / sqrt(a) (no "
        "clipping); sigma = eta * sqrt((1 - a') / (1 - a) * (1 - a / a')); x = sqrt(a') * x0 + sqrt(1 - a' - "
        "sigma^2) * eps + sigma * z (z only when eta > 0); the last step (a' = 1) gives x = x0",
        "noise": "the caller's: standard normal float32 [batch, C, H, W] tensors, independent: x_T once, then per "
        "step anchor_noise and, when eta > 0, z; clsp draws them per sample in that order (x_T, then "
        "anchor_noise (fresh only), z for each step)",
    }


def _dpm_rules(anchor_noise: str) -> dict[str, str]:
    return {
        "step": "diffusers DPMSolverMultistepScheduler(algorithm_type='dpmsolver++', solver_order=2) with the "
        f"schedule and grid above; anchor_t and eps as for ddim, {_anchor_noise_rule(anchor_noise)}; noise: x_T, "
        "then per step anchor_noise",
    }
