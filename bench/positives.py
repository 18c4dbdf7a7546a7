"""End-to-end positive generation speed, and the sampler loop's overhead over pure denoiser time.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/positives.py [--runs 3] [--steps 10]

For each preset it generates one shard of ``--batch`` positives (``--batch // k`` anchors x k candidates, one
sampler batch) with the real driver (:func:`clsp.positives.generate.generate_shard`) and writes it to a real
store, timing the whole thing and, separately, the time spent inside the denoiser. The overhead is everything
else: noise streams, scheduler steps, uint8 conversion and the atomic shard write. Positives/s are measured at
``--steps`` sampler steps and also given for the paper's 100 (the per-step cost does not depend on the count).
Weights are random: speed does not depend on them.
"""

import argparse
import platform
import statistics
import tempfile
import time

import numpy as np
import torch

from clsp.diffusion.sampler import SamplerSettings
from clsp.diffusion.unet import InterpolatingDenoiser, build_unet
from clsp.positives.generate import generate_shard
from clsp.positives.store import PositiveStore

PRESETS = {"small": (16, 1), "ddpm-cifar": (32, 3)}


class TimedDenoiser:
    """Wraps a denoiser and adds up the seconds spent inside it."""

    def __init__(self, denoiser: InterpolatingDenoiser) -> None:
        self.denoiser, self.seconds = denoiser, 0.0

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.denoiser(*args)
        self.seconds += time.perf_counter() - start
        return out


def bench_preset(preset: str, batch: int, k: int, steps: int, runs: int) -> dict[str, float]:
    size, channels = PRESETS[preset]
    denoiser = TimedDenoiser(InterpolatingDenoiser(build_unet(preset, size, channels).eval()))
    anchors = np.random.default_rng(0).integers(0, 256, (batch // k, size, size, channels), dtype=np.uint8)
    settings = SamplerSettings(steps, 0.1, "ddim", "fp32", 1000, 1e-4, 0.02)
    totals, denoiser_times = [], []
    for run in range(runs + 1):  # the first run warms up and is dropped
        with tempfile.TemporaryDirectory() as tmp:
            store = PositiveStore.create(
                tmp, n=len(anchors), num_candidates=k, image_shape=anchors.shape[1:], dataset_fingerprint="bench",
                provenance={}, shard_size=len(anchors),
            )  # fmt: skip
            denoiser.seconds = 0.0
            start = time.perf_counter()
            shard = generate_shard(
                denoiser, anchors, range(len(anchors)), k, 0.1, run, settings, batch, torch.device("cpu")
            )
            store.write_shard(0, shard)
            total = time.perf_counter() - start
        if run:
            totals.append(total)
            denoiser_times.append(denoiser.seconds)
    total, inside = statistics.median(totals), statistics.median(denoiser_times)
    return {
        "positives/s": batch / total,
        "positives/s at 100 steps": batch / total * steps / 100,
        "overhead": (total - inside) / inside,
        "s/step": total / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"batch {args.batch} ({args.batch // args.k} anchors x {args.k}), {args.steps} DDIM steps, eta 0.1, fp32")
    print("| preset | s / step | positives/s (measured) | positives/s at 100 steps | loop overhead over denoiser |")
    print("|---|---|---|---|---|")
    for preset in PRESETS:
        r = bench_preset(preset, args.batch, args.k, args.steps, args.runs)
        print(
            f"| {preset} | {r['s/step']:.3f} | {r['positives/s']:.2f} | {r['positives/s at 100 steps']:.2f} "
            f"| {100 * r['overhead']:.1f}% |"
        )


if __name__ == "__main__":
    main()
