"""Compute each stage of a shipped config needs: FLOPs counted on this project's own modules, turned into hours.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/compute.py configs/cifar10_simclr_clsp.yaml [more configs]

For every stage it counts the FLOPs of one unit of work with ``torch.utils.flop_counter`` (a DDPM training step,
an interpolating denoiser call, an SSL step of backbone + projector over all views), scales by the config's
epochs, dataset size, candidates and sampling steps, and prints GPU-hours at a sustained 15 and 30 TFLOP/s (an
A10 to an A100 in fp32/TF32 practice; method.md section 7 uses the same range). The batch is counted small and
scaled linearly, since every layer here is linear in the batch. It also times the unit on this machine's CPU,
so the FLOP count can be checked against a measured rate. Estimates, not measurements on a GPU.
"""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from clsp.config import Config, load_config
from clsp.contrastive.backbones import Projector, build_backbone
from clsp.diffusion.unet import InterpolatingDenoiser, build_unet

TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "stl10": 100_000, "digits": 1_347}
COUNT_BATCH = 4


def flops_and_seconds(work: Callable[[], None]) -> tuple[int, float]:
    """FLOPs of one call of ``work`` and its wall time on this machine (the median of three calls)."""
    with FlopCounterMode(display=False) as counter:
        work()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return counter.get_total_flops(), sorted(times)[1]


def per_image_costs(cfg: Config, size: int, channels: int) -> dict[str, tuple[int, float]]:
    """FLOPs and CPU seconds per image for: DDPM training, one denoiser call, one SSL view (fwd + bwd)."""
    unet = build_unet(cfg.diffusion.unet, size, channels)
    x = torch.randn(COUNT_BATCH, channels, size, size)
    t = torch.randint(0, 1000, (COUNT_BATCH,))

    def diffusion_step() -> None:
        unet(x, t).sample.square().mean().backward()

    denoiser = InterpolatingDenoiser(unet.eval(), cfg.positives.num_layers)

    @torch.no_grad()
    def denoiser_call() -> None:
        denoiser(x, torch.randn_like(x), t, torch.full((COUNT_BATCH,), 0.1))

    backbone, dim = build_backbone(cfg.ssl.backbone, cfg.ssl.stem, channels)
    projector = Projector(dim, cfg.ssl.projector_hidden_dim, cfg.ssl.projector_dim)
    crop = cfg.ssl.augment.crop_size or size

    def ssl_view() -> None:
        projector(backbone(torch.randn(COUNT_BATCH, channels, crop, crop))).square().mean().backward()

    costs = {
        "diffusion": flops_and_seconds(diffusion_step),
        "positives": flops_and_seconds(denoiser_call),
        "ssl": flops_and_seconds(ssl_view),
    }
    return {k: (f // COUNT_BATCH, s / COUNT_BATCH) for k, (f, s) in costs.items()}


def stage_workload(cfg: Config) -> dict[str, tuple[float, str]]:
    """Images processed per stage (training images x epochs, anchors x candidates x steps, views x epochs)."""
    n = TRAIN_SIZES[cfg.data.source]
    views = 2 + (cfg.ssl.clsp_weight > 0)
    # MoCo also runs the momentum encoder forward on the two real views: about 1/3 of a fwd+bwd each.
    ssl_views = views + (2 / 3 if cfg.ssl.method == "moco" else 0)
    p = cfg.positives
    return {
        "diffusion": (n * cfg.diffusion.epochs, f"{cfg.diffusion.epochs} epochs x {n:,} images"),
        "positives": (
            n * p.num_candidates * p.num_steps,
            f"{n:,} x {p.num_candidates} candidates x {p.num_steps} steps",
        ),
        "ssl": (n * cfg.ssl.epochs * ssl_views, f"{cfg.ssl.epochs} epochs x {n:,} x {ssl_views:.3g} views"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        "| config | stage | work | GFLOP per image | total PFLOP | GPU-h @15 TFLOP/s | GPU-h @30 | CPU GFLOP/s here |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path in args.configs:
        cfg = load_config(path)
        size = {"cifar10": 32, "cifar100": 32, "stl10": 64, "digits": 16}[cfg.data.source]
        size = cfg.diffusion.image_size or size
        channels = 1 if cfg.data.source == "digits" else 3
        costs = per_image_costs(cfg, size, channels)
        for stage, (images, work) in stage_workload(cfg).items():
            flops, seconds = costs[stage]
            total = flops * images
            hours = [total / (rate * 1e12) / 3600 for rate in (15, 30)]
            print(
                f"| {path.name} | {stage} | {work} | {flops / 1e9:.2f} | {total / 1e15:,.0f} | "
                f"{hours[0]:,.1f} | {hours[1]:,.1f} | {flops / seconds / 1e9:.0f} |"
            )


if __name__ == "__main__":
    main()
