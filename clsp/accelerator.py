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


def describe_device(device: torch.device, requested: str = "auto") -> str:
    """What a summary says about the device, including why ``auto`` chose the CPU."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu (no CUDA GPU found)" if requested == "auto" else "cpu"
