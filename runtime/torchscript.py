"""TorchScript backend: a traced ``model.pt`` (deprecated by PyTorch; kept for libtorch C++ runners)."""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from clsp.export.to_torchscript import quiet_jit
from clsp.runtime.errors import unloadable
from clsp.runtime.layout import StandardLayoutInputs


def load_torchscript(path: Path, device: str | torch.device = "cpu") -> Callable[..., Tensor]:
    """The traced module at ``path`` on ``device``, in eval mode: ``module(*inputs) -> output``, inputs given to
    it in row-major layout (copied when their strides differ), as to every compiled backend."""
    try:
        with quiet_jit():
            return StandardLayoutInputs(torch.jit.load(str(path), map_location=device).eval())
    except (RuntimeError, ValueError) as e:
        raise unloadable(path, "TorchScript file", e) from None
