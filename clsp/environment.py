"""What this machine offers clsp: package versions, devices and which optional backends import."""

import importlib
import importlib.metadata
import os
import platform

import torch

PACKAGES = ("torch", "torchvision", "diffusers", "accelerate", "safetensors", "numpy", "scikit-learn")
OPTIONAL_BACKENDS = {
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript",
    "tensorrt": "tensorrt",
}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _backend_status(module: str) -> str:
    try:
        imported = importlib.import_module(module)
    except Exception as e:  # TensorRT stubs fail with OSError on missing shared libraries, not ImportError
        return f"not importable ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    version = getattr(imported, "__version__", "?")
    if module == "onnxruntime":
        return f"{version} (providers: {', '.join(imported.get_available_providers())})"
    return str(version)


def environment_report() -> dict[str, str]:
    """Name -> description of the Python, packages, devices and optional export backends."""
    report = {"python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}
    report.update({name: _version(name) for name in PACKAGES})
    report["cpu threads (torch)"] = f"{torch.get_num_threads()} of {os.cpu_count()} cores"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        report["cuda"] = f"{torch.version.cuda}: {', '.join(names)}"
    else:
        report["cuda"] = "no CUDA device"
    report["cpu capability"] = torch.backends.cpu.get_cpu_capability()
    for label, module in OPTIONAL_BACKENDS.items():
        report[f"backend {label}"] = _backend_status(module)
    return report
