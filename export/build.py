"""Export a run's models: each (model, format) artifact is reused while its cache key matches, else rebuilt,
written atomically, checked against PyTorch and sealed with its ``metadata.json``."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from clsp.atomic import atomic_write, atomic_write_text, file_sha256
from clsp.config import Config, ExportConfig, save_resolved_config
from clsp.diffusion.sampler import SamplerSettings
from clsp.errors import ClspError
from clsp.export.artifacts import (
    FILE_NAMES,
    FORMATS,
    METADATA_FILE,
    artifact_dir,
    expected_metadata,
    is_current,
    pt2_device,
    read_metadata,
    refresh_unkeyed,
)
from clsp.export.parity import check_parity
from clsp.export.real_inputs import denoiser_real_inputs, encoder_real_inputs
from clsp.export.specs import (
    EXAMPLE_BATCH,
    KINDS,
    Kind,
    ModelSpec,
    RealInputs,
    denoiser_spec,
    encoder_spec,
    run_denoiser,
    run_encoder,
)
from clsp.progress import warn
from clsp.run_folder import keep_earlier
from clsp.runtime.load import open_artifact

TIMING_CACHE = "timing.cache"
"""TensorRT's layer timing cache, shared by the run's engines: ``<output_dir>/export/trt/timing.cache``."""


@dataclass(frozen=True)
class ExportResult:
    """One artifact: where it is, whether this call built it, and its sidecar's figures."""

    kind: str
    fmt: str
    path: Path
    rebuilt: bool
    metadata: dict

    def summary(self) -> str:
        size = self.path.stat().st_size / 2**20
        checked = parity_summary(self.metadata.get("parity") or [])
        action = f"built in {self.metadata['export_seconds']:.1f} s" if self.rebuilt else "up to date"
        return f"{self.path} ({size:.1f} MiB): {action}; {checked}"


def parity_summary(parity: list[dict]) -> str:
    """``eps max rel 2.1e-07 (random, odd strides, digits train anchors)``: each output's worst figure over the
    input sets checked, or ``not checked``."""
    if not parity:
        return "not checked"
    worst: dict[str, float] = {}
    for p in parity:
        worst[p["output"]] = max(worst.get(p["output"], 0.0), p["max_rel"])
    inputs = dict.fromkeys(p.get("inputs", "random") for p in parity)
    return ", ".join(f"{name} max rel {value:.1e}" for name, value in worst.items()) + f" ({', '.join(inputs)})"


def devices(fmt: str) -> tuple[str, str]:
    """Where the module runs while exporting to ``fmt``, and where the artifact runs for the parity check."""
    if fmt == "pt2":
        return pt2_device(), pt2_device()
    return "cpu", "cuda" if fmt == "trt" else "cpu"


def parity_batch(fmt: str, settings: ExportConfig) -> int:
    """A batch unlike the example one (so the dynamic batch is exercised), inside a TensorRT profile."""
    batch = EXAMPLE_BATCH + 1
    return min(max(batch, settings.min_batch), settings.max_batch) if fmt == "trt" else batch


def tolerance(fmt: str, settings: ExportConfig) -> float:
    return settings.trt_rtol if fmt == "trt" and settings.trt_precision != "fp32" else settings.rtol


def _write(spec: ModelSpec, fmt: str, path: Path, output_dir: Path, settings: ExportConfig, check: bool) -> None:
    if fmt == "onnx":
        from clsp.export.to_onnx import write_onnx

        write_onnx(spec, path, settings.opset)
    elif fmt == "torchscript":
        from clsp.export.to_torchscript import write_torchscript

        write_torchscript(spec, path)
    elif fmt == "pt2":
        from clsp.export.to_pt2 import write_pt2

        write_pt2(spec, path)
    else:
        from clsp.export.to_tensorrt import write_engine

        onnx = export_model(spec, "onnx", output_dir, settings, check)  # engines are built from the ONNX
        write_engine(spec, onnx.path, path, settings, artifact_dir(output_dir, fmt, spec.kind).parent / TIMING_CACHE)


def export_model(
    spec: ModelSpec, fmt: str, output_dir: Path, settings: ExportConfig, check: bool, reuse: bool = True
) -> ExportResult:
    """Make ``<output_dir>/export/<fmt>/<kind>/`` hold a current export of ``spec``; reuse it when it does (and
    ``reuse``).

    A rebuild removes the old ``metadata.json`` first, writes the artifact to a temporary file, checks its parity
    with ``spec.module`` there (when ``check``), renames it into place and writes the new ``metadata.json``
    last: an interrupted or failed export never leaves a folder that looks complete.
    """
    directory = artifact_dir(output_dir, fmt, spec.kind)
    expected = expected_metadata(spec, fmt, settings)
    path = directory / FILE_NAMES[fmt]
    if reuse and is_current(directory, expected):
        return ExportResult(spec.kind, fmt, path, False, refresh_unkeyed(directory, expected))
    (directory / METADATA_FILE).unlink(missing_ok=True)
    export_device, run_device = devices(fmt)
    spec.module.to(export_device)
    parity = []
    started = time.perf_counter()

    def write_and_check(tmp: Path) -> None:
        _write(spec, fmt, tmp, output_dir, settings, check)
        if check:
            model = open_artifact(fmt, tmp, run_device)
            parity.extend(
                check_parity(spec, model, fmt, tolerance(fmt, settings), run_device, parity_batch(fmt, settings))
            )

    atomic_write(path, write_and_check)
    metadata = {
        **expected,
        "artifact_sha256": file_sha256(path),
        "artifact_bytes": path.stat().st_size,
        "export_seconds": round(time.perf_counter() - started, 2),
        "parity": [p.to_json() for p in parity] or None,
    }
    atomic_write_text(directory / METADATA_FILE, json.dumps(metadata, indent=1))
    return ExportResult(spec.kind, fmt, path, True, metadata)


def real_inputs(kind: Kind, build: Callable[[], RealInputs]) -> RealInputs | None:
    """``build()``, or None with a warning when the run's dataset cannot be read here (the parity check then runs
    on random inputs only)."""
    try:
        return build()
    except ClspError as e:
        warn(f"the {kind} parity check runs on random inputs only: {e}")
        return None


def model_spec(cfg: Config, kind: Kind, run: Path | None) -> ModelSpec:
    """The spec of the run's ``kind`` (the encoder from ``run`` when given), with real parity inputs."""
    if kind == "denoiser":
        denoiser = run_denoiser(cfg)
        spec = denoiser_spec(denoiser, SamplerSettings.from_config(cfg), cfg.positives.weight)
        channels = denoiser.sample_shape[0]
        return replace(spec, real_inputs=real_inputs(kind, lambda: denoiser_real_inputs(cfg, channels)))
    encoder, backbone = run_encoder(cfg, run)
    spec = encoder_spec(encoder, backbone)
    return replace(spec, real_inputs=real_inputs(kind, lambda: encoder_real_inputs(cfg, backbone)))


def run_specs(cfg: Config, models: tuple[Kind, ...] = KINDS, run: Path | None = None) -> list[ModelSpec]:
    """The run's ``models``: the denoiser (``<output_dir>/unet``) and the encoder (see
    :func:`~clsp.export.encoder_source.find_encoder`; ``run`` picks one). A model asked for that is missing
    is an error naming it and how to leave it out."""
    specs, missing = [], []
    for kind in models:
        try:
            specs.append(model_spec(cfg, kind, run))
        except ClspError as e:
            missing.append(str(e))
    if not specs:
        raise ClspError(f"nothing to export in {cfg.run.output_dir}: " + "; ".join(missing))
    if missing:
        found = "--models " + ",".join(spec.kind for spec in specs)
        raise ClspError("; ".join(missing) + f"; to export the rest alone, pass {found}")
    return specs


def export_run(
    cfg: Config,
    formats: tuple[str, ...] | None = None,
    check: bool | None = None,
    models: tuple[Kind, ...] = KINDS,
    run: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> list[ExportResult]:
    """Export the run's ``models`` (default both; the encoder from ``run`` when given) to ``formats`` (default
    ``export.formats``) under ``<output_dir>/export/``; ``check`` (default ``export.check``) runs the parity
    check on what is rebuilt. Asking for nothing, or for a model that is missing, is a ClspError. Artifacts
    already there are refused unless ``resume`` (the current ones kept, stale ones rebuilt) or ``overwrite``
    (all rebuilt)."""
    formats = tuple(fmt for fmt in FORMATS if fmt in (formats or cfg.export.formats))
    if not formats:
        raise ClspError("export.formats is empty: pass --onnx, --torchscript, --pt2 or --trt")
    output_dir = cfg.run.output_dir
    earlier = [f"{f}/{k}" for f in formats for k in models if read_metadata(artifact_dir(output_dir, f, k)) is not None]
    reuse = keep_earlier(
        cfg.layout.export, f"exports ({', '.join(earlier)})" if earlier else None, resume, overwrite,
        "keep the current ones (stale ones are rebuilt)",
    )  # fmt: skip
    check = cfg.export.check if check is None else check
    if "trt" in formats:
        from clsp.runtime.trt import import_tensorrt

        import_tensorrt()  # fail before spending minutes on the other formats
    specs = run_specs(cfg, models, run)
    save_resolved_config(cfg, cfg.layout.export)
    results = []
    with torch.no_grad():
        for fmt in formats:
            for spec in specs:
                results.append(export_model(spec, fmt, output_dir, cfg.export, check, reuse))
    return results
