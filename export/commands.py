"""``clsp export`` and ``clsp features``: parse, load the config, call the library, summarise.

Register them with ``app.command("export")(export_command)`` and ``app.command("features")(features_command)``.
"""

import time
from pathlib import Path
from typing import Annotated

import typer

from clsp.cli_args import ConfigArgument, SetOption, parse_name_list
from clsp.config import BACKENDS, load_config
from clsp.errors import ClspError
from clsp.progress import print_summary

RunOption = Annotated[
    Path | None,
    typer.Option(
        "--run",
        help="The run folder whose encoder to use (it holds ssl/backbone.*), e.g. runs/digits/seed0/clsp-simclr. "
        "Default: <output_dir>/ssl, else the encoder a `clsp demo` in <output_dir> records as its result.",
    ),
]


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
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated: denoiser, encoder. Default: both; a missing one is an error."),
    ] = None,
    run: RunOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep the artifacts already there that are current; rebuild stale ones.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild the artifacts already there.")] = False,
) -> None:
    """Export the run's denoiser (<output_dir>/unet) and encoder to <output_dir>/export/<format>/.

    The encoder is --run's, else <output_dir>/ssl, else the one a `clsp demo` in <output_dir> records as its
    result (the summary says which). Without format flags, export.formats decides. Each artifact gets a
    metadata.json with a cache key: with --resume, current artifacts are kept and stale ones rebuilt. The parity
    check (on by default; random inputs, odd strides and the run's own images) fails with the error figures when an
    artifact differs from PyTorch by more than export.rtol. TorchScript is deprecated by PyTorch.
    """
    flags = [name for name, on in (("onnx", onnx), ("torchscript", torchscript), ("pt2", pt2), ("trt", trt)) if on]
    cfg = load_config(config, overrides or [])
    from clsp.export.build import export_run  # torch loads slowly: only once the config is valid
    from clsp.export.encoder_source import find_encoder
    from clsp.export.specs import KINDS

    chosen = tuple(dict.fromkeys(parse_name_list(models, "--models", KINDS))) if models is not None else KINDS
    results = export_run(cfg, tuple(flags) or None, check, chosen, run, resume, overwrite)
    summary = {f"{r.kind} {r.fmt}": r.summary() for r in results}
    if "encoder" in chosen:
        summary = {"encoder": str(find_encoder(cfg, run)), **summary}
    print_summary("clsp export", summary)


def features_command(
    config: ConfigArgument,
    out: Annotated[Path, typer.Option("--out", help="Output file: .npy ([N, D] float32) or .safetensors.")],
    overrides: SetOption = None,
    backend: Annotated[str, typer.Option("--backend", help=f"One of {', '.join(BACKENDS)}.")] = "torch",
    split: Annotated[
        str | None, typer.Option("--split", help="A split of data.source (default: data.test_split).")
    ] = None,
    input_dir: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="A folder of images instead of a split, resized to the encoder's size and channels (data.channels rule).",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (a CUDA GPU when usable, else the CPU), cpu, cuda or cuda:N.")
    ] = "auto",
    run: RunOption = None,
) -> None:
    """Encode a split (or an image folder) with the run's encoder on a backend and save the features."""
    if backend not in BACKENDS:
        raise ClspError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if split is not None and input_dir is not None:
        raise ClspError("give --split or --input, not both")
    cfg = load_config(config, overrides or [])
    from clsp.accelerator import describe_device, pick_device
    from clsp.data import check_split, load_images_at
    from clsp.data.folder import load_image_folder
    from clsp.export.encoder_source import find_encoder
    from clsp.export.specs import run_encoder
    from clsp.runtime.features import check_features_path, encode_loaded, files_list_path, save_features
    from clsp.runtime.load import load_encoder

    check_features_path(out)
    torch_device = pick_device(device)
    split = split or cfg.data.test_split
    check_split(cfg.data, split)
    backbone = run_encoder(cfg, run)[1]
    size = int(backbone["image_size"])
    if input_dir is not None:
        channels = int(backbone["in_channels"])  # the rule of data.channels: grey by ITU-R 601 luma
        images = load_image_folder(
            input_dir, size, cfg.data.skip_bad_images, "--input", channels, cfg.data.max_image_pixels
        )
    else:  # at the encoder's input size, as clsp eval (STL-10: 96 px -> 64 px)
        images = load_images_at(cfg.data, split, size)
    started = time.perf_counter()
    encoder, backbone = load_encoder(cfg, backend, torch_device, run)
    loaded = time.perf_counter()
    features = encode_loaded(encoder, backbone, images, cfg.export.max_batch, torch_device, backend)
    seconds = time.perf_counter() - loaded
    path = save_features(out, features, images.labels, images.files)
    rows = {
        "images": f"{images.name}: {len(images)} x {images.image_shape}",
        "encoder": str(find_encoder(cfg, run)),
        "backend": backend,
        "device": describe_device(torch_device, device),
        "features": f"{list(features.shape)} float32 -> {path}",
        "row order": str(files_list_path(path)) if images.files else f"the {split} split's own order",
        "start-up (load the encoder)": f"{loaded - started:.2f} s",
        "images / s (encoding)": f"{len(images) / seconds:.0f}",
    }
    print_summary("clsp features", rows)
