"""Exported artifacts on disk: where they live, their ``metadata.json`` sidecar, its cache key, and validation.

Layout: ``<output_dir>/export/<format>/<kind>/{model.<ext>, metadata.json}``. The sidecar is written last and
removed first, so a folder whose metadata is present and whose key and SHA-256 match holds a complete,
current artifact; anything else is rebuilt by the exporter and refused by the runtime.

The cache key is the SHA-256 of everything that changes what the artifact computes or whether it runs here:
format, kind, inputs and outputs, the model facts (image size, normalisation, ...), the source weights' hash,
the format's settings and the versions (and devices) the format depends on. The contract (preprocessing, the
sampler, ...: clsp/export/contract.py) and the precision are recorded but not keyed, since the denoiser graph is
the same for any number of steps; a reused artifact's sidecar gets the current ones.
"""

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Literal

import torch

from clsp.atomic import atomic_write_text, file_sha256
from clsp.config import ExportConfig
from clsp.errors import ClspError
from clsp.export.specs import ModelSpec
from clsp.json_files import plain_file_name
from clsp.run_layout import RunLayout

Format = Literal["onnx", "torchscript", "pt2", "trt"]
FORMATS: tuple[Format, ...] = ("onnx", "torchscript", "pt2", "trt")
FILE_NAMES: dict[str, str] = {
    "onnx": "model.onnx",
    "torchscript": "model.pt",
    "pt2": "model.pt2",
    "trt": "model.engine",
}
METADATA_FILE = "metadata.json"
KEYED_VERSIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("torch", "onnx", "onnxscript"),
    "torchscript": ("torch",),
    "pt2": ("torch", "cuda", "cpu"),
    "trt": ("onnx", "tensorrt", "cuda", "gpu"),
}
"""Which of :func:`versions` each format's key depends on (pt2 holds compiled machine code; TensorRT engines
are built for one GPU and TensorRT version)."""


def artifact_dir(output_dir: Path, fmt: str, kind: str) -> Path:
    return RunLayout(Path(output_dir)).export / fmt / kind


def _distribution(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def versions() -> dict[str, str]:
    """Versions of torch, onnx, onnxscript, onnxruntime, TensorRT and CUDA; the CPU's vector ISA; the GPU."""
    gpu = "none"
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        gpu = f"{torch.cuda.get_device_name()} (sm_{major}{minor})"
    return {
        "torch": torch.__version__,
        "onnx": _distribution("onnx"),
        "onnxscript": _distribution("onnxscript"),
        "onnxruntime": max(_distribution("onnxruntime"), _distribution("onnxruntime-gpu"), key=lambda v: v != "none"),
        "tensorrt": _distribution("tensorrt"),
        "cuda": torch.version.cuda or "none",
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "gpu": gpu,
    }


def pt2_device() -> str:
    """AOTInductor compiles for one device: the GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def format_settings(fmt: str, settings: ExportConfig) -> dict[str, Any]:
    """The export settings that shape a ``fmt`` artifact."""
    if fmt == "onnx":
        return {"opset": settings.opset}
    if fmt == "pt2":
        return {"device": pt2_device()}
    if fmt == "trt":
        return {
            "opset": settings.opset,
            "min_batch": settings.min_batch,
            "opt_batch": settings.opt_batch,
            "max_batch": settings.max_batch,
            "precision": settings.trt_precision,
        }
    return {}


def artifact_precision(fmt: str, settings: ExportConfig) -> str:
    """The precision a ``fmt`` artifact computes in: ``export.trt_precision`` for TensorRT engines, else fp32
    (the ONNX, TorchScript and pt2 graphs hold fp32 weights and ops; a libtorch caller may add autocast)."""
    return settings.trt_precision if fmt == "trt" else "fp32"


def expected_metadata(spec: ModelSpec, fmt: str, settings: ExportConfig) -> dict[str, Any]:
    """The sidecar an up-to-date ``fmt`` export of ``spec`` has, before the artifact's own figures are added.

    Keys: ``format, kind, file, inputs, outputs, model`` (facts), ``source_sha256, settings, versions`` (all
    of them; the format's subset is keyed), ``key``; unkeyed: ``precision`` (:func:`artifact_precision`) and the
    spec's record (the contract of :mod:`clsp.export.contract`: ``preprocessing``/``output`` or ``sampler``...).
    """
    found = versions()
    keyed = {
        "format": fmt,
        "kind": spec.kind,
        "file": FILE_NAMES[fmt],
        "inputs": [t.to_json() for t in spec.inputs],
        "outputs": [t.to_json() for t in spec.outputs],
        "model": spec.facts,
        "source_sha256": spec.source_sha256,
        "settings": format_settings(fmt, settings),
        # releases, not build tags: a `+cu130` export serves under a `+cpu` torch of the same release (as the C++
        # runner checks); the device-specific formats key the CUDA version and the GPU or CPU besides
        "keyed_versions": {name: found[name].split("+")[0] for name in KEYED_VERSIONS[fmt]},
    }
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
    return {**keyed, "versions": found, "key": key, "precision": artifact_precision(fmt, settings), **spec.record}


def read_metadata(directory: Path) -> dict[str, Any] | None:
    """The sidecar in ``directory``, or None when it is missing or unreadable (treated as not exported)."""
    try:
        metadata = json.loads((Path(directory) / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) and isinstance(metadata.get("key"), str) else None


def is_current(directory: Path, expected: dict[str, Any]) -> bool:
    """Whether ``directory`` holds a complete artifact whose key is ``expected["key"]`` (hash checked)."""
    metadata = read_metadata(directory)
    if metadata is None or metadata["key"] != expected["key"] or metadata.get("file") != expected["file"]:
        return False
    artifact = Path(directory) / expected["file"]
    return artifact.is_file() and file_sha256(artifact) == metadata.get("artifact_sha256")


def refresh_unkeyed(directory: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """The sidecar of the current artifact in ``directory`` with its unkeyed fields (precision, the contract:
    e.g. a new ``positives.num_steps``) set to ``expected``'s, rewritten atomically when they changed. ``versions``
    stays as built: it says what made the artifact."""
    stored = read_metadata(directory) or {}
    refreshed = {**stored, **{name: value for name, value in expected.items() if name != "versions"}}
    if refreshed != stored:
        atomic_write_text(Path(directory) / METADATA_FILE, json.dumps(refreshed, indent=1))
    return refreshed


def differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """``field: stored -> expected`` for every keyed field that differs (why an artifact is stale)."""
    found = []
    for field in ("format", "kind", "inputs", "outputs", "model", "source_sha256", "settings", "keyed_versions"):
        old, new = stored.get(field), expected[field]
        if isinstance(new, dict) and isinstance(old, dict):
            found += [f"{field}.{k}: {old.get(k)} -> {new[k]}" for k in new if old.get(k) != new[k]]
        elif old != new:
            found.append(f"{field}: {_short(old)} -> {_short(new)}")
    return found


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validated_artifact(directory: Path, expected: dict[str, Any] | None, fix: str) -> tuple[Path, dict[str, Any]]:
    """The artifact file in ``directory`` and its sidecar, after checking both; ``fix`` says how to re-export.

    Raises ClspError when the sidecar is missing, when its key differs from ``expected["key"]`` (naming the
    fields that changed; ``expected`` None skips this) or when the file's SHA-256 does not match it
    (truncated, corrupt or half-written).
    """
    directory = Path(directory)
    metadata = read_metadata(directory)
    if metadata is None:
        raise ClspError(f"{directory}: no exported model ({METADATA_FILE} missing or unreadable); {fix}")
    if expected is not None and metadata["key"] != expected["key"]:
        changed = "; ".join(differences(metadata, expected)) or "cache key"
        raise ClspError(f"{directory}: the export is stale ({changed}); {fix}")
    name = plain_file_name(metadata.get("file"), directory / METADATA_FILE, "file", fix)
    if name != (expected["file"] if expected is not None else FILE_NAMES.get(metadata.get("format"))):
        raise ClspError(f"{directory / METADATA_FILE}: names the model file {name!r}, not its format's; {fix}")
    artifact = directory / name
    if not artifact.is_file() or file_sha256(artifact) != metadata.get("artifact_sha256"):
        raise ClspError(f"{artifact}: missing, truncated or corrupt (SHA-256 differs from {METADATA_FILE}); {fix}")
    return artifact, metadata
