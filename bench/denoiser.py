"""Time one interpolating denoiser step against a plain UNet forward, the hook-based two-pass approach, and bf16.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/denoiser.py [--runs 5] [--small-unet runs/digits/unet]

Prints a markdown table per preset: median seconds per call over ``--runs`` rounds, the variants taking turns
within each round so that load from other processes hits them alike, and ratios from the same run. Then it
samples the same seeds in fp32 and bf16 and reports the images' mean absolute difference in uint8 levels.
"""

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch
from diffusers import UNet2DModel
from torch import Tensor

from clsp.diffusion.sampler import SamplerSettings, model_to_images, sample_positives
from clsp.diffusion.unet import InterpolatingDenoiser, build_unet, load_pretrained_unet


def hooked_two_pass(unet: UNet2DModel) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """The approach InterpolatingDenoiser replaces: a full anchor pass to record h_a, then a hooked sample pass."""

    def denoise(x_t: Tensor, anchor_t: Tensor, t: Tensor, w: Tensor) -> Tensor:
        recorded: list[Tensor] = []
        handle = unet.mid_block.register_forward_hook(lambda m, a, out: recorded.append(out))
        unet(anchor_t, t)
        handle.remove()
        wv = w.view(-1, 1, 1, 1)
        handle = unet.mid_block.register_forward_hook(lambda m, a, out: wv * out + (1 - wv) * recorded[0])
        try:
            return unet(x_t, t).sample
        finally:
            handle.remove()

    return denoise


def median_times(variants: dict[str, Callable[[], Tensor]], runs: int) -> dict[str, float]:
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


@torch.no_grad()
def bench_preset(name: str, unet: UNet2DModel, batch: int, runs: int) -> None:
    unet.eval()
    c, size = unet.config.in_channels, unet.config.sample_size
    g = torch.Generator().manual_seed(0)
    x, a = torch.randn(batch, c, size, size, generator=g), torch.randn(batch, c, size, size, generator=g)
    t, w = torch.full((batch,), 500), torch.full((batch,), 0.1)
    interp, hooked = InterpolatingDenoiser(unet), hooked_two_pass(unet)
    interp_cl = InterpolatingDenoiser(copy.deepcopy(unet).to(memory_format=torch.channels_last))
    x_cl, a_cl = x.to(memory_format=torch.channels_last), a.to(memory_format=torch.channels_last)

    def bf16(fn: Callable[[], Tensor]) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn()

        return run

    variants = {
        "plain unet(x_t, t)": lambda: unet(x, t).sample,
        "interpolating": lambda: interp(x, a, t, w),
        "hooked two-pass": lambda: hooked(x, a, t, w),
        "interpolating bf16": bf16(lambda: interp(x, a, t, w)),
        "interpolating channels-last": lambda: interp_cl(x_cl, a_cl, t, w),
        "interpolating bf16 channels-last": bf16(lambda: interp_cl(x_cl, a_cl, t, w)),
    }
    med = median_times(variants, runs)
    eps32, eps16 = interp(x, a, t, w), bf16(lambda: interp(x, a, t, w))().float()
    rel = ((eps16 - eps32).norm() / eps32.norm()).item()
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(f"\n### `{name}` ({params:.1f} M params), batch {batch}, {size}x{size}x{c}, median of {runs} runs\n")
    print("| variant | s / call | vs plain | vs interpolating |")
    print("|---|---|---|---|")
    for variant, seconds in med.items():
        vs_plain = seconds / med["plain unet(x_t, t)"]
        vs_interp = seconds / med["interpolating"]
        print(f"| {variant} | {seconds:.4f} | {vs_plain:.2f}x | {vs_interp:.2f}x |")
    print(
        f"\nhooked two-pass / interpolating: **{med['hooked two-pass'] / med['interpolating']:.2f}x**; "
        f"fp32 / bf16: **{med['interpolating'] / med['interpolating bf16']:.2f}x**; "
        f"relative L2 error of eps in bf16: {rel:.1e}"
    )


def image_difference(name: str, unet: UNet2DModel, batch: int, steps: int) -> None:
    """Sample the same seeds in fp32 and bf16; print the mean |difference| of the uint8 images."""
    unet.eval()
    denoiser = InterpolatingDenoiser(unet)
    c, size = unet.config.in_channels, unet.config.sample_size
    anchors = torch.rand(batch, c, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images = {}
    for precision in ("fp32", "bf16"):
        settings = SamplerSettings(steps, 0.1, "ddim", precision, 1000, 1e-4, 0.02)
        start = time.perf_counter()
        x = sample_positives(
            denoiser, anchors, 0.1, torch.arange(batch), torch.zeros(batch, dtype=torch.long), 0, settings
        )
        images[precision] = (model_to_images(x).astype(float), time.perf_counter() - start)
    diff = abs(images["fp32"][0] - images["bf16"][0]).mean()
    print(
        f"\n`{name}`: {batch} positives, DDIM {steps} steps, w 0.1: fp32 {images['fp32'][1]:.1f} s, "
        f"bf16 {images['bf16'][1]:.1f} s; mean |fp32 - bf16| = {diff:.2f} uint8 levels"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cifar-batch", type=int, default=32)
    parser.add_argument("--small-batch", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--small-unet", help="a trained UNet folder for the small preset (default: random init)")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}; "
        f"torch {torch.__version__}"
    )
    torch.manual_seed(0)
    cifar = build_unet("ddpm-cifar", 32, 3)
    small = load_pretrained_unet(args.small_unet) if args.small_unet else build_unet("small", 16, 1)
    bench_preset("ddpm-cifar", cifar, args.cifar_batch, args.runs)
    bench_preset("small", small, args.small_batch, args.runs)
    image_difference("ddpm-cifar (random init)", cifar, args.cifar_batch, args.sample_steps)
    image_difference(
        "small" + (" (trained)" if args.small_unet else " (random init)"), small, args.small_batch, args.sample_steps
    )


if __name__ == "__main__":
    main()
