"""TorchScript backend: a traced ``model.pt`` (deprecated by PyTorch; kept for libtorch C++ runners)."""

from pathlib import Path

import torch

from clsp.export.to_torchscript import quiet_jit
from clsp.runtime.errors import unloadable


def load_torchscript(path: Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The traced module at ``path`` on ``device``, in eval mode: ``module(*inputs) -> output``."""
    try:
        with quiet_jit():
            return torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as e:
        raise unloadable(path, "TorchScript file", e) from None
