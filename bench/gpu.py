"""One table of clsp's speed on an accelerator: the ceiling, the interpolating step, the sampler's own overhead,
end-to-end positives/s, ONNX Runtime / TensorRT against eager, and SSL steps/s.

    bench/gpu.sh                  # on a CUDA machine; under 8 minutes on one current GPU
    bench/gpu.sh --dry-run        # every part on this machine's CPU at toy sizes: checks the script runs
    bench/gpu.sh --device cpu --parts overhead step   # CPU figures at the real sizes (bench/RESULTS.md)

Every time is the median of ``--runs`` calls after a warm-up, synchronised on CUDA. FLOPs are counted with
``torch.utils.flop_counter`` on the same module; "% of ceiling" divides the achieved rate by the measured bf16
matmul rate (fp32 rows too, so they read as a fraction of the bf16 ceiling).
"""

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from clsp.diffusion.noise import NoiseStreams
from clsp.diffusion.sampler import SamplerSettings, interpolation_step, make_scheduler
from clsp.diffusion.unet import InterpolatingDenoiser, build_unet

PARTS = ("ceiling", "step", "overhead", "positives", "ort", "ssl")
Row = tuple[str, str, str]


def median_seconds(work: Callable[[], object], runs: int, device: torch.device) -> float:
    """Median wall time of ``runs`` calls of ``work`` after one warm-up call."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    work()
    sync()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ceiling(device: torch.device, size: int, runs: int) -> float:
    """Measured bf16 matmul rate in TFLOP/s (square ``size`` matrices)."""
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * size**3 / median_seconds(lambda: a @ b, runs, device) / 1e12


class Sizes:
    def __init__(self, dry_run: bool) -> None:
        self.preset, self.image, self.channels = ("tiny", 16, 1) if dry_run else ("ddpm-cifar", 32, 3)
        self.batches = (4, 8) if dry_run else (256, 1024)
        self.matmul = 256 if dry_run else 8192
        self.positive_steps = 2 if dry_run else 10
        self.ssl_batch = 8 if dry_run else 512


def step_inputs(sizes: Sizes, batch: int, device: torch.device):
    shape = (batch, sizes.channels, sizes.image, sizes.image)
    anchors = torch.rand(shape, device=device) * 2 - 1
    return anchors, torch.randn(shape, device=device), torch.full((batch,), 0.1, device=device)


def step_rows(sizes: Sizes, device: torch.device, runs: int, peak: float | None, compile_step: bool) -> list[Row]:
    """The interpolating step (noise, anchor re-noising, denoiser, DDIM update) in fp32, bf16 and compiled bf16."""
    unet = build_unet(sizes.preset, sizes.image, sizes.channels).to(device).eval()
    eager = InterpolatingDenoiser(unet, 1).eval()
    variants: dict[str, tuple[Callable, str]] = {"eager fp32": (eager, "fp32"), "eager bf16": (eager, "bf16")}
    if compile_step:
        mode = "reduce-overhead" if device.type == "cuda" else None
        variants["compiled bf16"] = (torch.compile(eager, mode=mode, dynamic=False), "bf16")
    settings = SamplerSettings(100, 0.1, "ddim", "fp32", 1000, 1e-4, 0.02)
    scheduler, rows = make_scheduler(settings), []
    for batch in sizes.batches:
        anchors, x, w = step_inputs(sizes, batch, device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            eager(x, anchors, torch.full((batch,), 500, device=device), w)
        flops = counter.get_total_flops()
        for name, (denoiser, precision) in variants.items():
            noise = NoiseStreams(0, torch.arange(batch), torch.zeros(batch, dtype=torch.int64))

            @torch.no_grad()
            def step(denoiser=denoiser, precision=precision, noise=noise, x=x, anchors=anchors, w=w) -> None:
                a, z = noise.draw(x.shape[1:], device), noise.draw(x.shape[1:], device)
                interpolation_step(denoiser, scheduler, x, anchors, 509, w, a, z, 0.1, precision)

            seconds = median_seconds(step, runs, device)
            rate = flops / seconds / 1e12
            share = f", {100 * rate / peak:.1f}% of ceiling" if peak else ""
            rows.append((f"step, batch {batch}, {name}", f"{1e3 * seconds:.1f} ms", f"{rate:.2f} TFLOP/s{share}"))
    return rows


def overhead_rows(sizes: Sizes, device: torch.device, runs: int) -> list[Row]:
    """The sampler's own cost per step (a denoiser that returns zeros) against bare torch.randn + DDIM arithmetic."""
    batch = sizes.batches[-1]
    anchors, x, w = step_inputs(sizes, batch, device)
    settings = SamplerSettings(100, 0.1, "ddim", "fp32", 1000, 1e-4, 0.02)
    scheduler = make_scheduler(settings)

    def zeros(x_t, anchor_t, t, w):
        return torch.zeros_like(x_t)

    noise = NoiseStreams(0, torch.arange(batch), torch.zeros(batch, dtype=torch.int64))

    @torch.no_grad()
    def sampler_step() -> None:
        a, z = noise.draw(x.shape[1:], device), noise.draw(x.shape[1:], device)
        interpolation_step(zeros, scheduler, x, anchors, 509, w, a, z, 0.1)

    @torch.no_grad()
    def bare() -> None:  # the same arithmetic with torch's own generator and plain tensor ops
        a, z = torch.randn_like(x), torch.randn_like(x)
        ab, ab_prev = 0.3, 0.31
        anchor_t = ab**0.5 * anchors + (1 - ab) ** 0.5 * a
        eps = torch.zeros_like(anchor_t)
        x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
        (ab_prev**0.5 * x0 + 0.5 * eps + 0.01 * z).sum()

    ours, base = median_seconds(sampler_step, runs, device), median_seconds(bare, runs, device)
    one_draw = median_seconds(lambda: noise.draw(x.shape[1:], device), runs, device)
    randn = median_seconds(lambda: torch.randn_like(x), runs, device)
    return [
        (
            f"sampler overhead per step, batch {batch}",
            f"{1e3 * ours:.1f} ms",
            f"bare randn + DDIM: {1e3 * base:.1f} ms",
        ),
        (f"one noise draw, batch {batch}", f"{1e3 * one_draw:.1f} ms", f"torch.randn: {1e3 * randn:.1f} ms"),
    ]


def positives_rows(sizes: Sizes, device: torch.device) -> list[Row]:
    """End-to-end positives/s of generate_shard (bf16, one shard of ``batch`` pairs, ``positive_steps`` steps)."""
    from clsp.positives.generate import generate_shard

    batch = sizes.batches[-1]
    unet = build_unet(sizes.preset, sizes.image, sizes.channels).to(device).eval()
    denoiser = InterpolatingDenoiser(unet, 1).eval()
    anchors = torch.randint(0, 256, (batch, sizes.image, sizes.image, sizes.channels), dtype=torch.uint8).numpy()
    settings = SamplerSettings(sizes.positive_steps, 0.1, "ddim", "bf16", 1000, 1e-4, 0.02)
    settings.check()
    seconds = median_seconds(
        lambda: generate_shard(denoiser, anchors, range(batch), 1, 0.1, 0, settings, batch, device), 1, device
    )
    per_100 = batch / seconds * sizes.positive_steps / 100
    return [
        (
            f"positives/s, batch {batch}, {sizes.positive_steps} steps",
            f"{batch / seconds:.1f}",
            f"{per_100:.1f} at 100 steps",
        )
    ]


def ort_rows(sizes: Sizes, device: torch.device, runs: int) -> list[Row]:
    """The denoiser as ONNX on ONNX Runtime (CUDA provider on a GPU; TensorRT provider where it loads) vs eager."""
    from clsp.export.specs import denoiser_spec
    from clsp.export.to_onnx import write_onnx
    from clsp.runtime.ort import OrtModel

    batch = sizes.batches[0]
    unet = build_unet(sizes.preset, sizes.image, sizes.channels).eval()
    settings = SamplerSettings(100, 0.1, "ddim", "fp32", 1000, 1e-4, 0.02)
    spec = denoiser_spec(InterpolatingDenoiser(unet, 1), settings, 0.1)
    anchors, x, w = step_inputs(sizes, batch, device)
    t = torch.full((batch,), 500, device=device)
    eager = spec.module.to(device)
    with torch.no_grad():
        base = median_seconds(lambda: eager(x, anchors, t, w), runs, device)
    rows = [(f"eager fp32 denoiser, batch {batch}", f"{1e3 * base:.1f} ms", "reference")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "denoiser.onnx"
        write_onnx(spec, path, 18)
        try:
            model = OrtModel(path, device)
        except Exception as e:  # no CUDA provider in this onnxruntime build: say so in the table
            return [*rows, ("ONNX Runtime", "-", str(e).splitlines()[0][:100])]
        seconds = median_seconds(lambda: model(x, anchors, t, w), runs, device)
        rows.append(
            (f"ORT ({model.providers[0]}), batch {batch}", f"{1e3 * seconds:.1f} ms", f"{base / seconds:.2f}x eager")
        )
    return rows


def ssl_rows(sizes: Sizes, device: torch.device) -> list[Row]:
    """SSL images/s of a bf16 CLSP-SimCLR ResNet-18 step through accelerate launch (bench/train_throughput.py)."""
    script = Path(__file__).with_name("train_throughput.py")
    args = ["--steps", "3", "--workers", "--batch-size", str(sizes.ssl_batch), "--bf16", "--device", device.type]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "bf16"]
    run = subprocess.run([*launch, str(script), *args], capture_output=True, text=True)
    if run.returncode:
        return [("SSL step (accelerate launch, bf16)", "failed", run.stderr.strip().splitlines()[-1][:100])]
    line = next(line for line in run.stdout.splitlines() if line.startswith("| pre-loaded"))
    images_per_s = float(line.split("|")[2])
    steps = images_per_s / (3 * sizes.ssl_batch)
    return [
        (
            f"SSL steps/s, ResNet-18, batch {sizes.ssl_batch} x 3 views, bf16",
            f"{steps:.2f}",
            f"{images_per_s:.0f} images/s",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU: checks every part runs")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled step (saves compile time)")
    parser.add_argument("--batches", type=int, nargs="+", help="step batch sizes (default 256 1024; dry run 4 8)")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"))
    sizes = Sizes(args.dry_run)
    sizes.batches = tuple(args.batches or sizes.batches)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"torch {torch.__version__}, {device} ({name}), {torch.get_num_threads()} threads, dry run: {args.dry_run}")
    rows: list[Row] = []
    peak = None
    if "ceiling" in args.parts:
        peak = ceiling(device, sizes.matmul, args.runs)
        rows.append((f"bf16 matmul {sizes.matmul}^3 (ceiling)", f"{peak:.2f} TFLOP/s", ""))
    if "step" in args.parts:
        rows += step_rows(sizes, device, args.runs, peak, not args.no_compile)
    if "overhead" in args.parts:
        rows += overhead_rows(sizes, device, args.runs)
    if "positives" in args.parts:
        rows += positives_rows(sizes, device)
    if "ort" in args.parts:
        rows += ort_rows(sizes, device, args.runs)
    if "ssl" in args.parts:
        rows += ssl_rows(sizes, device)
    print("| measure | value | notes |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
