"""Export with cache keys, parity checks and atomic writes (clsp/export/build.py, artifacts.py, parity.py)."""

import json
from pathlib import Path

import pytest
import torch

from clsp.errors import ClspError
from clsp.export import build
from clsp.export.artifacts import METADATA_FILE, artifact_dir
from clsp.export.build import export_model, export_run, run_specs
from clsp.export.parity import check_parity
from clsp.runtime.layout import standard_strides
from clsp.runtime.ort import OrtModel


def leftovers(directory: Path) -> list[Path]:
    """Temporary files atomic_write would leave behind on a crash."""
    return [p for p in directory.rglob(".*") if ".tmp" in p.name]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["denoiser", "encoder"])
def test_export_writes_artifact_and_metadata(exported_run: Path, fmt: str, kind: str) -> None:
    directory = artifact_dir(exported_run, fmt, kind)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    assert (directory / metadata["file"]).stat().st_size == metadata["artifact_bytes"]
    assert len(metadata["key"]) == 64 and metadata["format"] == fmt and metadata["kind"] == kind
    assert set(metadata["versions"]) >= {"torch", "onnx", "onnxruntime", "tensorrt", "cuda"}
    assert metadata["model"]["image_size"] == 16 and metadata["model"]["channels"] == 1
    real = "digits/train[:64] anchors" if kind == "denoiser" else "digits/test images"
    assert [p["inputs"] for p in metadata["parity"]] == ["random", "odd strides", real]
    assert all(p["batch"] == 3 and p["max_rel"] <= 1e-4 for p in metadata["parity"])
    if kind == "denoiser":
        assert [t["name"] for t in metadata["inputs"]] == ["x_t", "anchor_t", "t", "w"]
        assert metadata["inputs"][2] == {"name": "t", "shape": ["batch"], "dtype": "int64"}
        assert metadata["model"]["mean"] == [0.5] and metadata["sampler"]["num_steps"] == 10
    else:
        assert metadata["outputs"] == [{"name": "features", "shape": ["batch", 256], "dtype": "float32"}]
        assert metadata["model"]["mean"] == [0.25] and metadata["model"]["std"] == [0.35]
    assert not leftovers(exported_run)
    assert (exported_run / "export" / "config.yaml").is_file()


def test_onnx_file_is_self_contained_with_four_distinct_inputs(exported_run: Path) -> None:
    import onnx

    directory = artifact_dir(exported_run, "onnx", "denoiser")
    model = onnx.load(str(directory / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["x_t", "anchor_t", "t", "w"]
    assert model.opset_import[0].version >= 18
    assert not list(directory.glob("*.data"))


def test_current_exports_are_reused_and_stale_ones_rebuilt(run_copy: Path, config_of) -> None:
    with pytest.raises(
        ClspError, match=r"holds exports \(onnx/denoiser, onnx/encoder\) of an earlier run; pass --resume"
    ):
        export_run(config_of(run_copy), ("onnx",))
    results = export_run(config_of(run_copy), ("onnx", "torchscript"), resume=True)
    assert [r.rebuilt for r in results] == [False] * 4
    tampered = artifact_dir(run_copy, "torchscript", "encoder") / METADATA_FILE
    tampered.write_text(json.dumps({**json.loads(tampered.read_text()), "key": "0" * 64}))
    # num_layers changes the denoiser graph: its key changes, the encoder's does not
    results = export_run(config_of(run_copy, "positives.num_layers=2"), ("torchscript",), resume=True)
    assert {r.kind: r.rebuilt for r in results} == {"denoiser": True, "encoder": True}
    assert (
        json.loads((artifact_dir(run_copy, "torchscript", "denoiser") / METADATA_FILE).read_text())["model"][
            "num_layers"
        ]
        == 2
    )
    results = export_run(config_of(run_copy, "positives.num_layers=2"), ("torchscript",), resume=True)
    assert [r.rebuilt for r in results] == [False, False]
    results = export_run(config_of(run_copy, "positives.num_layers=2"), ("torchscript",), overwrite=True)
    assert [r.rebuilt for r in results] == [True, True]


def test_a_truncated_artifact_is_rebuilt(run_copy: Path, config_of) -> None:
    path = artifact_dir(run_copy, "torchscript", "encoder") / "model.pt"
    path.write_bytes(path.read_bytes()[:100])
    (result,) = [r for r in export_run(config_of(run_copy), ("torchscript",), resume=True) if r.kind == "encoder"]
    assert result.rebuilt and path.stat().st_size > 100_000


def test_parity_failure_reports_figures_and_writes_nothing(fresh_run: Path, config_of) -> None:
    cfg = config_of(fresh_run, "export.rtol=1e-12")
    (_, encoder) = run_specs(cfg)
    with pytest.raises(
        ClspError, match=r"encoder onnx export differs from PyTorch at batch 3: features \(random\): max abs .* max rel"
    ):
        export_model(encoder, "onnx", fresh_run, cfg.export, check=True)
    directory = artifact_dir(fresh_run, "onnx", "encoder")
    assert not (directory / "model.onnx").exists() and not (directory / METADATA_FILE).exists()
    assert not leftovers(fresh_run)
    unchecked = export_model(encoder, "onnx", fresh_run, cfg.export, check=False)
    assert unchecked.rebuilt and unchecked.metadata["parity"] is None


def test_parity_catches_a_backend_that_ignores_strides(exported_run: Path, config_of) -> None:
    (spec,) = run_specs(config_of(exported_run), ("encoder",))
    model = OrtModel(artifact_dir(exported_run, "onnx", "encoder") / "model.onnx")

    def stride_blind(x: torch.Tensor) -> torch.Tensor:  # reads the memory as if it were row-major
        return model(x.as_strided(x.shape, standard_strides(x.shape)))

    assert all(p.passed for p in check_parity(spec, model, "onnx", 1e-4, "cpu", 3))
    with pytest.raises(ClspError, match=r"at batch 3: features \(odd strides\): max abs .* FAILED; nothing was"):
        check_parity(spec, stride_blind, "onnx", 1e-4, "cpu", 3)


def test_an_interrupted_export_leaves_no_artifact_that_looks_complete(
    run_copy: Path, config_of, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(spec, path: Path) -> None:
        path.write_bytes(b"half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr("clsp.export.to_torchscript.write_torchscript", crash)
    cfg = config_of(run_copy, "positives.num_layers=2")  # the denoiser is stale and must be rebuilt
    with pytest.raises(KeyboardInterrupt):
        export_run(cfg, ("torchscript",), resume=True)
    directory = artifact_dir(run_copy, "torchscript", "denoiser")
    assert not (directory / METADATA_FILE).exists()  # the old sidecar went first: nothing claims to be current
    assert not leftovers(run_copy)
    with pytest.raises(ClspError, match="no exported model"):
        from clsp.export.specs import run_denoiser
        from clsp.runtime.load import load_denoiser

        load_denoiser(
            config_of(run_copy, "positives.num_layers=2", "positives.backend=torchscript"), run_denoiser(cfg), "cpu"
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_trt_without_tensorrt_or_cuda_fails_first_and_clearly(fresh_run: Path, config_of) -> None:
    with pytest.raises(ClspError, match=r"TensorRT is not usable here: no CUDA GPU.*`import tensorrt` failed"):
        export_run(config_of(fresh_run), ("onnx", "trt"))
    assert not (fresh_run / "export").exists()  # refused before exporting anything


def test_nothing_to_export_names_both_missing_models(tmp_path: Path, config_of) -> None:
    with pytest.raises(ClspError, match=r"nothing to export.*clsp diffusion train.*clsp train"):
        export_run(config_of(tmp_path / "empty"), ("torchscript",))


def test_a_missing_encoder_is_an_error_unless_the_denoiser_is_asked_alone(fresh_run: Path, config_of) -> None:
    for path in (fresh_run / "ssl").iterdir():
        path.unlink()
    with pytest.raises(ClspError, match=r"no trained encoder in .*; to export the rest alone, pass --models denoiser$"):
        export_run(config_of(fresh_run), ("torchscript",))
    assert not (fresh_run / "export").exists()
    (result,) = export_run(config_of(fresh_run), ("torchscript",), models=("denoiser",))
    assert result.kind == "denoiser"


def test_devices_and_parity_batch_fit_tensorrt_profiles(config_of, tmp_path: Path) -> None:
    settings = config_of(tmp_path, "export.min_batch=8", "export.opt_batch=16").export
    assert build.parity_batch("trt", settings) == 8 and build.parity_batch("onnx", settings) == 3
    assert build.devices("trt") == ("cpu", "cuda")
    assert build.tolerance("trt", settings) == settings.trt_rtol and build.tolerance("onnx", settings) == 1e-4
