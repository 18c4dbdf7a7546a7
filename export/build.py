"""Export a run's models: each (model, format) artifact is reused while its cache key matches, else rebuilt,
written atomically, checked against PyTorch and sealed with its ``metadata.json``."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from clsp.atomic import atomic_write, atomic_write_text
from clsp.config import Config, ExportConfig, save_resolved_config
from clsp.diffusion.sampler import SamplerSettings
from clsp.errors import ClspError
from clsp.export.artifacts import (
    FILE_NAMES,
    FORMATS,
    METADATA_FILE,
    artifact_dir,
    expected_metadata,
    file_sha256,
    is_current,
    pt2_device,
    read_metadata,
)
from clsp.export.parity import check_parity
from clsp.export.specs import EXAMPLE_BATCH, ModelSpec, denoiser_spec, encoder_spec, run_denoiser, run_encoder
from clsp.progress import warn
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
        parity = self.metadata.get("parity") or []
        checked = ", ".join(f"{p['output']} max rel {p['max_rel']:.1e}" for p in parity) or "not checked"
        action = f"built in {self.metadata['export_seconds']:.1f} s" if self.rebuilt else "up to date"
        return f"{self.path} ({size:.1f} MiB): {action}; {checked}"


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


def export_model(spec: ModelSpec, fmt: str, output_dir: Path, settings: ExportConfig, check: bool) -> ExportResult:
    """Make ``<output_dir>/export/<fmt>/<kind>/`` hold a current export of ``spec``; reuse it when it does.

    A rebuild removes the old ``metadata.json`` first, writes the artifact to a temporary file, checks its parity
    with ``spec.module`` there (when ``check``), renames it into place and writes the new ``metadata.json``
    last: an interrupted or failed export never leaves a folder that looks complete.
    """
    directory = artifact_dir(output_dir, fmt, spec.kind)
    expected = expected_metadata(spec, fmt, settings)
    path = directory / FILE_NAMES[fmt]
    if is_current(directory, expected):
        return ExportResult(spec.kind, fmt, path, False, read_metadata(directory) or {})
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


def run_specs(cfg: Config) -> list[ModelSpec]:
    """The run's exportable models: the denoiser (when a UNet is trained) and the encoder (when SSL ran)."""
    specs, missing = [], []
    try:
        denoiser = run_denoiser(cfg)
        specs.append(denoiser_spec(denoiser, SamplerSettings.from_config(cfg), cfg.positives.weight))
    except ClspError as e:
        missing.append(str(e))
    try:
        specs.append(encoder_spec(*run_encoder(cfg)))
    except ClspError as e:
        missing.append(str(e))
    if not specs:
        raise ClspError(f"nothing to export in {cfg.run.output_dir}: " + "; ".join(missing))
    for reason in missing:
        warn(f"skipped: {reason}")
    return specs


def export_run(cfg: Config, formats: tuple[str, ...] | None = None, check: bool | None = None) -> list[ExportResult]:
    """Export the run's denoiser and encoder to ``formats`` (default ``export.formats``) under
    ``<output_dir>/export/``; ``check`` (default ``export.check``) runs the parity check on what is rebuilt."""
    formats = tuple(fmt for fmt in FORMATS if fmt in (formats or cfg.export.formats))
    check = cfg.export.check if check is None else check
    if "trt" in formats:
        from clsp.runtime.trt import import_tensorrt

        import_tensorrt()  # fail before spending minutes on the other formats
    specs = run_specs(cfg)
    save_resolved_config(cfg, cfg.run.output_dir / "export")
    results = []
    with torch.no_grad():
        for fmt in formats:
            for spec in specs:
                results.append(export_model(spec, fmt, cfg.run.output_dir, cfg.export, check))
    return results
