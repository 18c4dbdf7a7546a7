"""Devices: one Accelerator per pipeline stage (even when one process runs several stages: tests, the demo), and
the ``--device`` choice of the commands that run outside Accelerate."""

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from clsp.errors import ClspError


def stage_accelerator(precision: str = "no", **kwargs: Any) -> Accelerator:
    """An ``Accelerator`` with this mixed precision ("no", "bf16", "fp16").

    Accelerate fixes one precision per process; a process that already ran a stage with another one gets its
    AcceleratorState reset here. The process group lives in PartialState, which stays.
    """
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=precision, **kwargs)


def pick_device(requested: str = "auto") -> torch.device:
    """``--device`` as a torch device: ``auto`` is the first CUDA GPU when one is usable, else the CPU (see
    :func:`describe_device`); ``cpu``, ``cuda`` and ``cuda:N`` are checked to be usable here."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(requested)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ClspError(f"--device {requested!r}: use auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ClspError(
            f"--device {requested}: no CUDA GPU is usable here (torch {torch.__version__}); use --device cpu"
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ClspError(f"--device {requested}: this machine has {torch.cuda.device_count()} GPU(s); use cuda:0 or cpu")
    return parsed


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX-BF16
    (torch's CPU capability flags). Elsewhere oneDNN emulates bf16 through fp32, and autocast makes a UNet forward
    11-27x slower instead of 2x faster (AVX2-only AMD EPYC, bench/RESULTS.md "bf16 without bf16 units")."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()  # torch < 2.5 lacks it: assume no bf16 units
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def describe_device(device: torch.device, requested: str = "auto") -> str:
    """What a summary says about the device, including why ``auto`` chose the CPU."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu (no CUDA GPU found)" if requested == "auto" else "cpu"
