"""``.pt2`` export: ``torch.export`` with a dynamic batch, compiled ahead of time by AOTInductor."""

from pathlib import Path

import torch
from torch.export import Dim

from clsp.export.specs import ModelSpec


def write_pt2(spec: ModelSpec, path: Path) -> None:
    """Export ``spec.module`` and compile it for the module's device into the AOTInductor package ``path``.

    The batch is ``Dim.AUTO``: a named ``Dim`` fails on diffusers' ``batch >= 64`` branch in up-sampling. AUTO
    records the example's side of that branch as a range (2..63) that the compiled code does not enforce; the
    branch only adds a ``.contiguous()``, and the parity check runs at another batch.
    """
    with torch.no_grad():
        program = torch.export.export(
            spec.module, spec.example_inputs(), dynamic_shapes=tuple({0: Dim.AUTO} for _ in spec.inputs)
        )
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
