"""``clsp export`` and ``clsp features``: parse, load the config, call the library, summarise.

Register them with ``app.command("export")(export_command)`` and ``app.command("features")(features_command)``.
"""

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from clsp.cli_args import ConfigArgument, SetOption
from clsp.config import load_config
from clsp.errors import ClspError
from clsp.progress import print_summary

BACKENDS = ("torch", "ort", "torchscript", "pt2", "trt")


def export_command(
    config: ConfigArgument,
    overrides: SetOption = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="ONNX (dynamo exporter, one file) for ONNX Runtime.")] = False,
    torchscript: Annotated[
        bool,
        typer.Option("--torchscript", help="TorchScript by tracing, for libtorch C++ runners. Deprecated by PyTorch."),
    ] = False,
    pt2: Annotated[bool, typer.Option("--pt2", help="torch.export + AOTInductor package (compiles ~10-60 s).")] = False,
    trt: Annotated[
        bool, typer.Option("--trt", help="TensorRT engine from the ONNX export (needs a CUDA GPU and tensorrt).")
    ] = False,
    check: Annotated[
        bool | None,
        typer.Option("--check/--no-check", help="Compare each new artifact with PyTorch. Default: export.check."),
    ] = None,
) -> None:
    """Export the run's denoiser (<output_dir>/unet) and encoder (<output_dir>/ssl) to <output_dir>/export/<format>/.

    Without format flags, export.formats decides. Each artifact gets a metadata.json with a cache key: current
    artifacts are kept, stale ones rebuilt. The parity check (on by default) fails with the error figures when an
    artifact differs from PyTorch by more than export.rtol. TorchScript is deprecated by PyTorch.
    """
    flags = [name for name, on in (("onnx", onnx), ("torchscript", torchscript), ("pt2", pt2), ("trt", trt)) if on]
    cfg = load_config(config, overrides or [])
    from clsp.export.build import export_run  # torch loads slowly: only once the config is valid

    results = export_run(cfg, tuple(flags) or None, check)
    print_summary("clsp export", {f"{r.kind} {r.fmt}": r.summary() for r in results})


def features_command(
    config: ConfigArgument,
    out: Annotated[Path, typer.Option("--out", help="Output file: .npy ([N, D] float32) or .safetensors.")],
    overrides: SetOption = None,
    backend: Annotated[str, typer.Option("--backend", help=f"One of {', '.join(BACKENDS)}.")] = "torch",
    split: Annotated[
        str | None, typer.Option("--split", help="A split of data.source (default: data.test_split).")
    ] = None,
    input_dir: Annotated[
        Path | None, typer.Option("--input", help="A folder of images instead of a split (resized to the encoder's).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
) -> None:
    """Encode a split (or an image folder) with the run's encoder on a backend and save the features."""
    if backend not in BACKENDS:
        raise ClspError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if split is not None and input_dir is not None:
        raise ClspError("give --split or --input, not both")
    cfg = load_config(config, overrides or [])
    from clsp.data import check_split, load_images
    from clsp.data.folder import load_image_folder
    from clsp.data.imageset import resize_images
    from clsp.export.specs import run_encoder
    from clsp.runtime.features import check_device, check_features_path, encode_images, greyscale_for, save_features

    check_features_path(out)
    torch_device = check_device(device)
    split = split or cfg.data.test_split
    check_split(cfg.data, split)
    backbone = run_encoder(cfg)[1]
    size = int(backbone["image_size"])
    if input_dir is not None:
        images = load_image_folder(input_dir, size, cfg.data.skip_bad_images, "--input")
        images = greyscale_for(images, int(backbone["in_channels"]))
    else:  # at the encoder's input size, as clsp eval (STL-10: 96 px -> 64 px)
        images = load_images(cfg.data, split)
        images = replace(images, images=resize_images(images.images, size))
    started = time.perf_counter()
    features = encode_images(cfg, backend, images, torch_device)
    seconds = time.perf_counter() - started
    path = save_features(out, features, images.labels)
    print_summary(
        "clsp features",
        {
            "images": f"{images.name}: {len(images)} x {images.image_shape}",
            "backend": backend,
            "features": f"{list(features.shape)} float32 -> {path}",
            "images / s (with loading)": f"{len(images) / seconds:.0f}",
        },
    )
