"""TorchScript export by tracing. PyTorch deprecates TorchScript (every ``torch.jit`` call warns); it stays for
C++ runners that link libtorch (``runtime/cpp``)."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from clsp.export.specs import ModelSpec


@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence the ``torch.jit`` FutureWarnings (deprecation, said once in the CLI help instead) and the
    TracerWarnings from diffusers' Python branches on shapes (the parity check at another batch size covers
    what they warn about)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def write_torchscript(spec: ModelSpec, path: Path) -> None:
    """Trace ``spec.module`` on example inputs and save the ScriptModule to ``path``."""
    with quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(spec.module, spec.example_inputs(), check_trace=False)
        torch.jit.save(traced, str(path))
