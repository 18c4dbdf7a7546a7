"""Load a run's exported denoiser or encoder for a backend, refusing missing, stale or damaged artifacts.

Every backend yields the same callables as the torch modules: the denoiser ``(x_t, anchor_t, t, w) -> eps``
that :func:`~clsp.diffusion.sampler.sample_positives` takes, and the encoder ``images -> features`` that
:func:`~clsp.features.extract_features` takes, so one sampler loop and one feature code serve all.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clsp.config import Backend, Config
from clsp.diffusion.sampler import Denoiser, SamplerSettings
from clsp.diffusion.unet import InterpolatingDenoiser
from clsp.errors import ClspError
from clsp.export.artifacts import artifact_dir, expected_metadata, validated_artifact
from clsp.export.specs import ModelSpec, denoiser_spec, encoder_spec, run_encoder
from clsp.positives.generate import effective_precision, torch_backend
from clsp.progress import warn

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
    spec: ModelSpec, backend: str, cfg: Config, device: str | torch.device, used_by: str, export_options: str = ""
) -> Callable[..., Tensor]:
    """``spec``'s artifact for ``backend`` from ``cfg``'s run, checked against the metadata an export of
    ``spec`` with ``cfg.export`` would write now (key, SHA-256). ``used_by`` names the setting that asked;
    ``export_options`` (e.g. `` --run PATH``) complete the ``clsp export`` command the error suggests."""
    fmt = BACKEND_FORMATS[backend]
    if fmt == "trt":  # without TensorRT or CUDA, no export could help: say what is missing first
        from clsp.runtime.trt import import_tensorrt

        import_tensorrt()
    directory = artifact_dir(cfg.run.output_dir, fmt, spec.kind)
    command = f"clsp export CONFIG --{fmt} --resume{export_options}"
    fix = f"{used_by}={backend} needs it: run `{command}` (with the same --set overrides) first"
    artifact, _ = validated_artifact(directory, expected_metadata(spec, fmt, cfg.export), fix)
    return open_artifact(fmt, artifact, device)


def load_denoiser(cfg: Config, denoiser: InterpolatingDenoiser, device: str | torch.device) -> Denoiser:
    """The denoiser ``positives.backend`` runs: ``denoiser`` itself (torch; compiled with ``positives.compile``) or
    its export of the run."""
    backend = cfg.positives.backend
    if backend == "torch":
        return torch_backend(cfg, denoiser, torch.device(device))
    settings = SamplerSettings.from_config(cfg, device)
    if effective_precision(cfg, settings) != settings.precision:
        warn(
            f"positives.precision={settings.precision} has no effect on backend {backend}: it runs the export "
            f"as built, in {effective_precision(cfg, settings)} (ONNX and pt2 in fp32, TensorRT in "
            "export.trt_precision)"
        )
    spec = denoiser_spec(denoiser, settings, cfg.positives.weight)
    exported = load_exported(spec, backend, cfg, device, "positives.backend")
    return CheckedDenoiser(exported, denoiser.sample_shape, cfg.diffusion.num_train_timesteps)


class CheckedDenoiser:
    """An exported denoiser ``(x_t, anchor_t, t, w) -> eps`` whose inputs are checked first (shapes, one batch,
    ``t`` in ``[0, T)``, ``w`` in ``[0, 1]``), so a wrong call is one line, not an error from inside ONNX Runtime
    or TensorRT."""

    def __init__(self, model: Callable[..., Tensor], sample_shape: tuple[int, int, int], num_train_timesteps: int):
        self.model, self.sample_shape, self.num_train_timesteps = model, tuple(sample_shape), num_train_timesteps

    def __call__(self, x_t: Tensor, anchor_t: Tensor, t: Tensor, w: Tensor) -> Tensor:
        batch = x_t.shape[0] if x_t.ndim == 4 else None
        shapes = {"x_t": tuple(x_t.shape), "anchor_t": tuple(anchor_t.shape), "t": tuple(t.shape), "w": tuple(w.shape)}
        expected = {
            "x_t": (batch, *self.sample_shape),
            "anchor_t": (batch, *self.sample_shape),
            "t": (batch,),
            "w": (batch,),
        }
        if batch is None or shapes != expected:
            raise ClspError(
                f"denoiser inputs {shapes} must be x_t, anchor_t [B, {', '.join(map(str, self.sample_shape))}], "
                "t and w [B], one batch B for all four"
            )
        if t.is_floating_point():
            raise ClspError(f"denoiser input t must be int64 timesteps in [0, {self.num_train_timesteps})")
        if t.device.type == "cpu" and batch:  # value checks on a GPU would cost a host sync every step
            if int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps:
                raise ClspError(f"denoiser input t must be int64 timesteps in [0, {self.num_train_timesteps})")
            if float(w.min()) < 0 or float(w.max()) > 1:
                raise ClspError("denoiser input w must lie in [0, 1]")
        return self.model(x_t, anchor_t, t, w)


def load_encoder(
    cfg: Config, backend: Backend, device: str | torch.device, run: Path | None = None
) -> tuple[Callable[..., Tensor], dict[str, Any]]:
    """The run's encoder (``run``'s when given, see :func:`~clsp.export.encoder_source.find_encoder`) for
    ``backend`` (``images [B,C,S,S] normalised -> features [B,D]``) and its ``backbone.json`` (``mean``, ``std``,
    ``image_size``, ``in_channels``, ...)."""
    encoder, backbone = run_encoder(cfg, run)
    if backend == "torch":
        module: nn.Module = encoder.to(device)
        return module, backbone
    options = "" if run is None else f" --run {run}"
    return load_exported(encoder_spec(encoder, backbone), backend, cfg, device, "--backend", options), backbone
