"""TensorRT engine from the ONNX export: one optimisation profile over the batch, fp32/fp16/bf16, timing cache."""

from pathlib import Path

from clsp.atomic import atomic_write
from clsp.config import ExportConfig
from clsp.errors import ClspError
from clsp.export.specs import ModelSpec
from clsp.runtime.trt import import_tensorrt


def write_engine(spec: ModelSpec, onnx_path: Path, path: Path, settings: ExportConfig, timing_cache: Path) -> None:
    """Parse ``onnx_path``, build a serialised engine for batches ``min_batch..max_batch`` (tuned for
    ``opt_batch``) at ``settings.trt_precision`` and write it to ``path``.

    ``timing_cache`` is read when present and written back after the build, so later builds (other models,
    other precisions) on this GPU skip the layer timings already measured.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ClspError(f"{onnx_path}: TensorRT cannot parse this ONNX file ({errors}); re-export with --onnx")
    config = builder.create_builder_config()
    if settings.trt_precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if settings.trt_precision == "fp16" else trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for tensor in spec.inputs:
        profile.set_shape(
            tensor.name,
            tensor.concrete_shape(settings.min_batch),
            tensor.concrete_shape(settings.opt_batch),
            tensor.concrete_shape(settings.max_batch),
        )
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ClspError(
            f"{onnx_path}: TensorRT could not build an engine (see its log above); try export.trt_precision=fp32"
        )
    path.write_bytes(bytes(engine))
    serialised = bytes(config.get_timing_cache().serialize())
    atomic_write(timing_cache, lambda tmp: tmp.write_bytes(serialised))
