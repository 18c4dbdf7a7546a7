"""``.pt2`` backend: an AOTInductor package (compiled machine code for one device)."""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from clsp.runtime.errors import unloadable
from clsp.runtime.layout import StandardLayoutInputs


def load_pt2(path: Path) -> Callable[..., Tensor]:
    """The compiled model in the AOTInductor package ``path``: ``model(*inputs) -> output``.

    Inputs must be on the device it was compiled for (``metadata.json``: ``settings.device``); they are given to
    the compiled code in the row-major layout it was compiled for (copied when their strides differ).
    """
    try:
        return StandardLayoutInputs(torch._inductor.aoti_load_package(str(path)))
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        raise unloadable(path, "AOTInductor package", e) from None
