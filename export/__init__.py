"""Exporters of the interpolating denoiser and the encoder (ONNX, TorchScript, .pt2, TensorRT).

Installed as ``clsp.export``; the top-level name ``export`` is not a package.
"""

if __name__ != "clsp.export":
    raise ImportError(f"this folder is the package 'clsp.export'; import it by that name, not as {__name__!r}")
