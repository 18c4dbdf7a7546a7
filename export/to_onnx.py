"""ONNX export with the dynamo exporter: one self-contained file (no ``.onnx.data``), dynamic batch, checked."""

from pathlib import Path

import torch
from torch.export import Dim

from clsp.errors import ClspError
from clsp.export.specs import ModelSpec


def write_onnx(spec: ModelSpec, path: Path, opset: int) -> None:
    """Export ``spec.module`` to ``path`` at ``opset`` with a dynamic batch on every input, then run
    ``onnx.checker`` on the file.

    ``Dim.AUTO`` rather than a named ``Dim``: diffusers' up-sampling branches on ``batch >= 64``, which a named
    dimension refuses and AUTO records as a range (the ONNX graph itself keeps no such guard).
    """
    try:
        import onnx
    except ImportError:
        raise ClspError("ONNX export needs the onnx extra: pip install 'clsp[onnx]'") from None
    torch.onnx.export(
        spec.module,
        spec.example_inputs(),
        str(path),
        input_names=spec.input_names,
        output_names=spec.output_names,
        dynamic_shapes=tuple({0: Dim.AUTO} for _ in spec.inputs),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    onnx.checker.check_model(str(path), full_check=True)
