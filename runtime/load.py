"""Load a run's exported denoiser or encoder for a backend, refusing missing, stale or damaged artifacts.

Every backend yields the same callables as the torch modules: the denoiser ``(x_t, anchor_t, t, w) -> eps``
that :func:`~clsp.diffusion.sampler.sample_positives` takes, and the encoder ``images -> features`` that
:func:`~clsp.evaluation.features.extract_features` takes, so one sampler loop and one feature code serve all.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from clsp.config import Config
from clsp.diffusion.sampler import Denoiser, SamplerSettings
from clsp.diffusion.unet import InterpolatingDenoiser
from clsp.export.artifacts import artifact_dir, expected_metadata, validated_artifact
from clsp.export.specs import ModelSpec, denoiser_spec, encoder_spec, run_encoder
from clsp.progress import warn

Backend = Literal["torch", "ort", "torchscript", "pt2", "trt"]
BACKEND_FORMATS: dict[str, str] = {"ort": "onnx", "torchscript": "torchscript", "pt2": "pt2", "trt": "trt"}
"""Which export format each non-torch backend runs."""


def open_artifact(fmt: str, path: Path, device: str | torch.device) -> Callable[..., Tensor]:
    """The model in artifact file ``path`` of format ``fmt`` as ``model(*inputs) -> output`` (no checks)."""
    if fmt == "onnx":
        from clsp.runtime.ort import OrtModel

        return OrtModel(path, device)
    if fmt == "torchscript":
        from clsp.runtime.torchscript import load_torchscript

        return load_torchscript(path, device)
    if fmt == "pt2":
        from clsp.runtime.pt2 import load_pt2

        return load_pt2(path)
    if fmt == "trt":
        from clsp.runtime.trt import TrtModel

        return TrtModel(path, device)
    raise ValueError(f"unknown export format {fmt!r}")


def load_exported(
    spec: ModelSpec, backend: str, cfg: Config, device: str | torch.device, used_by: str
) -> Callable[..., Tensor]:
    """``spec``'s artifact for ``backend`` from ``cfg``'s run, checked against the metadata an export of
    ``spec`` with ``cfg.export`` would write now (key, SHA-256). ``used_by`` names the setting that asked."""
    fmt = BACKEND_FORMATS[backend]
    directory = artifact_dir(cfg.run.output_dir, fmt, spec.kind)
    fix = f"{used_by}={backend} needs it: run `clsp export CONFIG --{fmt}` (with the same --set overrides) first"
    artifact, _ = validated_artifact(directory, expected_metadata(spec, fmt, cfg.export), fix)
    return open_artifact(fmt, artifact, device)


def load_denoiser(cfg: Config, denoiser: InterpolatingDenoiser, device: str | torch.device) -> Denoiser:
    """The denoiser ``positives.backend`` runs: ``denoiser`` itself (torch) or its export of the run."""
    backend = cfg.positives.backend
    if backend == "torch":
        return denoiser
    if cfg.positives.precision != "fp32" and backend != "torchscript":  # traced graphs follow autocast
        warn(
            f"positives.precision={cfg.positives.precision} has no effect on backend {backend}: it runs the export "
            "as built (ONNX and pt2 in fp32, TensorRT in export.trt_precision)"
        )
    spec = denoiser_spec(denoiser, SamplerSettings.from_config(cfg), cfg.positives.weight)
    return load_exported(spec, backend, cfg, device, "positives.backend")


def load_encoder(
    cfg: Config, backend: Backend, device: str | torch.device
) -> tuple[Callable[..., Tensor], dict[str, Any]]:
    """The run's encoder for ``backend`` (``images [B,C,S,S] normalised -> features [B,D]``) and its
    ``backbone.json`` (``mean``, ``std``, ``image_size``, ``in_channels``, ...)."""
    encoder, backbone = run_encoder(cfg)
    if backend == "torch":
        module: nn.Module = encoder.to(device)
        return module, backbone
    return load_exported(encoder_spec(encoder, backbone), backend, cfg, device, "--backend"), backbone
