"""One Accelerator per pipeline stage, even when one process runs several stages (tests, the demo)."""

from typing import Any

from accelerate import Accelerator
from accelerate.state import AcceleratorState


def stage_accelerator(precision: str = "no", **kwargs: Any) -> Accelerator:
    """An ``Accelerator`` with this mixed precision ("no", "bf16", "fp16").

    Accelerate fixes one precision per process; a process that already ran a stage with another one gets its
    AcceleratorState reset here. The process group lives in PartialState, which stays.
    """
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=precision, **kwargs)
