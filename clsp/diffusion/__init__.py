"""Diffusion: UNet presets, DDPM training, and the interpolating sampler that makes synthetic positives."""
