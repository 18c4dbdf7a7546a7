"""ONNX Runtime backend: an exported ``.onnx`` as a callable on torch tensors (CPU, CUDA or TensorRT provider)."""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clsp.errors import ClspError
from clsp.runtime.errors import unloadable
from clsp.runtime.layout import standard_layout

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
TORCH_TYPES = {"tensor(float)": torch.float32, "tensor(int64)": torch.int64}


def import_onnxruntime():
    """``onnxruntime`` (or ``onnxruntime-gpu``), or a ClspError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ClspError("backend ort needs ONNX Runtime: pip install 'clsp[onnx]' (or onnxruntime-gpu)") from None
    return onnxruntime


class OrtModel:
    """``model(*inputs) -> output``: run one ONNX graph on torch tensors given in the graph's input order.

    On ``device`` cuda the session uses the TensorRT and CUDA providers that this onnxruntime build has, and
    binds the torch tensors' memory directly (IO binding, no host copies); on the CPU it runs on numpy views.
    Inputs are handed over in row-major layout (copied only when their strides differ).
    The output comes back as a float32 torch tensor on the inputs' device.
    """

    def __init__(self, path: Path, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        ort = import_onnxruntime()
        self.device = torch.device(device)
        available = ort.get_available_providers()
        wanted = PREFERRED_PROVIDERS if self.device.type == "cuda" else ("CPUExecutionProvider",)
        providers = [p for p in wanted if p in available]
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in providers:
            raise ClspError(
                f"onnxruntime {ort.__version__} has no CUDA provider (found {available}); "
                "install onnxruntime-gpu (the trt extra) or run on the CPU"
            )
        options = ort.SessionOptions()
        # Spinning intra-op threads fight torch's for the same cores (calibration.md: 36 ms -> 2 s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise unloadable(path, "ONNX file", e) from None
        self.inputs = self.session.get_inputs()
        self.output = self.session.get_outputs()[0]
        self.providers = self.session.get_providers()

    def __call__(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != len(self.inputs):
            raise TypeError(f"expected {len(self.inputs)} inputs ({[i.name for i in self.inputs]}), got {len(inputs)}")
        if self.device.type == "cuda":
            return self._run_bound(inputs)
        feeds = {
            spec.name: standard_layout(x.detach().cpu()).numpy().astype(NUMPY_TYPES[spec.type], copy=False)
            for spec, x in zip(self.inputs, inputs, strict=True)
        }
        (out,) = self.session.run([self.output.name], feeds)
        return torch.from_numpy(out).to(inputs[0].device)

    def _run_bound(self, inputs: tuple[Tensor, ...]) -> Tensor:
        """Run with the inputs' and the output's CUDA memory bound in place (the graph's only symbolic dimension
        is the batch, so the output's shape is known before the run)."""
        device_id = self.device.index or 0
        binding = self.session.io_binding()
        bound = []  # the converted tensors must outlive the run
        for spec, x in zip(self.inputs, inputs, strict=True):
            x = standard_layout(x.detach().to(self.device, TORCH_TYPES[spec.type]))
            bound.append(x)
            binding.bind_input(spec.name, "cuda", device_id, NUMPY_TYPES[spec.type], tuple(x.shape), x.data_ptr())
        batch = inputs[0].shape[0]
        shape = tuple(dim if isinstance(dim, int) else batch for dim in self.output.shape)
        out = torch.empty(shape, dtype=torch.float32, device=self.device)
        binding.bind_output(self.output.name, "cuda", device_id, np.float32, shape, out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out
