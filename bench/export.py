"""Exported backends against eager PyTorch: denoiser ms per sampler step and encoder images/s.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/export.py [--runs 5] [--formats onnx torchscript pt2 trt]

Exports a randomly initialised denoiser (``--unet`` preset, default ``small`` at 16x16x1, the digits demo's) and
encoder (``--backbone``, default ResNet-18 with the CIFAR stem at 32x32x3) with the project's exporters (parity
checked), then times one denoiser call at ``--denoiser-batch`` (64) and one encoder call at ``--encoder-batch``
(256) per backend. Backends take turns within each of ``--runs`` rounds, so load from other processes hits them
alike; the table gives medians and ratios to eager from the same run, plus export time and artifact size.
Formats whose requirements are missing (TensorRT without CUDA) are listed as skipped.
"""

import argparse
import platform
import tempfile
from pathlib import Path

import torch
from denoiser import median_times  # bench/denoiser.py: run as a script, bench/ is on sys.path

from clsp.config import ExportConfig
from clsp.contrastive.backbones import build_backbone
from clsp.diffusion.sampler import SamplerSettings
from clsp.diffusion.unet import InterpolatingDenoiser, build_unet
from clsp.errors import ClspError
from clsp.export.artifacts import FORMATS
from clsp.export.build import devices, export_model
from clsp.export.specs import ModelSpec, denoiser_spec, encoder_spec
from clsp.runtime.load import open_artifact

BACKEND_NAMES = {"onnx": "ort", "torchscript": "torchscript", "pt2": "pt2", "trt": "trt"}


def bench_specs(args: argparse.Namespace) -> tuple[ModelSpec, ModelSpec]:
    torch.manual_seed(0)
    unet = build_unet(args.unet, args.unet_size, args.unet_channels)
    settings = SamplerSettings(50, 0.1, "ddim", "fp32", 1000, 1e-4, 0.02)
    encoder, dim = build_backbone(args.backbone, "cifar", args.encoder_channels)
    backbone = {
        "backbone": args.backbone,
        "in_channels": args.encoder_channels,
        "image_size": args.encoder_size,
        "feature_dim": dim,
        "mean": [0.5] * args.encoder_channels,
        "std": [0.25] * args.encoder_channels,
    }
    return denoiser_spec(InterpolatingDenoiser(unet), settings, 0.1), encoder_spec(encoder.eval(), backbone)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--unet", default="small")
    parser.add_argument("--unet-size", type=int, default=16)
    parser.add_argument("--unet-channels", type=int, default=1)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--encoder-size", type=int, default=32)
    parser.add_argument("--encoder-channels", type=int, default=3)
    parser.add_argument("--denoiser-batch", type=int, default=64)
    parser.add_argument("--encoder-batch", type=int, default=256)
    args = parser.parse_args()
    specs = bench_specs(args)
    batches = {"denoiser": args.denoiser_batch, "encoder": args.encoder_batch}
    settings = ExportConfig(max_batch=max(batches.values()), opt_batch=min(batches.values()))
    inputs = {spec.kind: spec.example_inputs(batches[spec.kind]) for spec in specs}
    calls = {spec.kind: {"eager": lambda s=spec: s.module(*inputs[s.kind])} for spec in specs}
    exported: dict[str, dict[str, str]] = {}
    skipped = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            try:
                for spec in specs:
                    result = export_model(spec, fmt, Path(tmp), settings, check=True)
                    spec.module.to("cpu")
                    device = devices(fmt)[1]
                    model = open_artifact(fmt, result.path, device)
                    on_device = tuple(x.to(device) for x in inputs[spec.kind])
                    calls[spec.kind][BACKEND_NAMES[fmt]] = lambda m=model, x=on_device: m(*x)
                    exported.setdefault(BACKEND_NAMES[fmt], {})[spec.kind] = (
                        f"{result.metadata['export_seconds']:.0f} s, {result.path.stat().st_size / 2**20:.1f} MiB"
                    )
            except ClspError as e:
                skipped.append(f"{fmt}: {str(e)[:120]}")
        times = {kind: median_times(variants, args.runs) for kind, variants in calls.items()}
    den, enc = times["denoiser"], times["encoder"]
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"median of {args.runs} runs\n"
    )
    print(
        f"| backend | denoiser ms/step (`{args.unet}`, batch {args.denoiser_batch}) | time vs eager "
        f"| encoder images/s (`{args.backbone}`, batch {args.encoder_batch}) | throughput vs eager "
        "| export denoiser | export encoder |"
    )
    print("|---|---|---|---|---|---|---|")
    for backend in den:
        images_per_s = args.encoder_batch / enc[backend]
        files = exported.get(backend, {"denoiser": "-", "encoder": "-"})
        print(
            f"| {backend} | {den[backend] * 1e3:.1f} | {den[backend] / den['eager']:.2f}x | {images_per_s:.0f} "
            f"| {enc['eager'] / enc[backend]:.2f}x | {files['denoiser']} | {files['encoder']} |"
        )
    for line in skipped:
        print(f"\nskipped {line}")


if __name__ == "__main__":
    main()
