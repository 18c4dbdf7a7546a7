"""TensorRT backend: a serialised engine as a callable on CUDA torch tensors."""

from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from clsp.errors import ClspError
from clsp.runtime.layout import standard_layout


def import_tensorrt() -> ModuleType:
    """``tensorrt``, imported lazily, once a CUDA device is known to exist; else a ClspError naming what is missing."""
    problems = []
    if not torch.cuda.is_available():
        problems.append("no CUDA GPU (torch.cuda.is_available() is False)")
    try:
        import tensorrt
    except Exception as e:  # the PyPI stubs fail with OSError on missing shared libraries, not ImportError
        problems.append(f"`import tensorrt` failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if problems:
        raise ClspError(
            f"TensorRT is not usable here: {'; '.join(problems)}. Build and run engines on a CUDA machine with the "
            "trt extra (pip install 'clsp[trt]' plus NVIDIA's TensorRT libraries), or use --onnx / --pt2 here"
        )
    return tensorrt


class TrtModel:
    """``model(*inputs) -> output``: run a serialised engine (one optimisation profile) on CUDA torch tensors.

    Inputs are given in the engine's input order and may lie on any device; the float32 output is returned
    on the GPU, inputs in row-major layout (copied only when their strides differ). Batches outside the engine's
    profile raise ClspError.
    """

    def __init__(self, path: Path, device: str | torch.device = "cuda") -> None:
        trt = import_tensorrt()
        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ClspError(
                f"{path}: TensorRT {trt.__version__} cannot load this engine on {torch.cuda.get_device_name()} "
                "(built for another GPU or TensorRT version, or corrupt); export it again with --trt on this machine"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        low, _, high = self.engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.batch_range = (low[0], high[0])

    def __call__(self, *inputs: Tensor) -> Tensor:
        batch = inputs[0].shape[0]
        if not self.batch_range[0] <= batch <= self.batch_range[1]:
            raise ClspError(
                f"batch {batch} is outside the TensorRT engine's profile {self.batch_range[0]}..{self.batch_range[1]}; "
                "lower the batch size or re-export with other export.min_batch/max_batch"
            )
        bound = []  # the converted tensors must outlive the run
        for name, x in zip(self.inputs, inputs, strict=True):
            x = standard_layout(x.detach().to(self.device, torch.int64 if not x.is_floating_point() else torch.float32))
            bound.append(x)
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape(self.outputs[0])), device=self.device)
        self.context.set_tensor_address(self.outputs[0], out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see its log above)")
        stream.synchronize()
        return out
