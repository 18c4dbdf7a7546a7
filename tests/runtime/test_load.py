"""Every backend gives the torch modules' callables; missing, stale and damaged artifacts are refused clearly."""

import json
from pathlib import Path

import pytest
import torch

from clsp.diffusion.sampler import SamplerSettings
from clsp.errors import ClspError
from clsp.export.artifacts import METADATA_FILE, artifact_dir
from clsp.export.specs import denoiser_spec, encoder_spec, run_denoiser, run_encoder
from clsp.runtime.load import load_denoiser, load_encoder
from clsp.runtime.ort import OrtModel
from clsp.runtime.torchscript import load_torchscript
from clsp.runtime.trt import TrtModel, import_tensorrt


@pytest.mark.parametrize("backend", ["ort", "torchscript"])
@pytest.mark.parametrize("batch", [1, 5])
def test_backends_match_torch_at_any_batch(exported_run: Path, config_of, backend: str, batch: int) -> None:
    cfg = config_of(exported_run, f"positives.backend={backend}")
    module = run_denoiser(cfg)
    spec = denoiser_spec(module, SamplerSettings.from_config(cfg), 0.1)
    inputs = spec.example_inputs(batch, seed=7)
    with torch.no_grad():
        eps = load_denoiser(cfg, module, "cpu")(*inputs)
        assert eps.shape == (batch, 1, 16, 16) and eps.dtype == torch.float32
        torch.testing.assert_close(eps, module(*inputs), rtol=1e-4, atol=1e-5)
        encoder, backbone = load_encoder(cfg, backend, "cpu")
        (images,) = encoder_spec(*run_encoder(cfg)).example_inputs(batch, seed=7)
        torch.testing.assert_close(encoder(images), run_encoder(cfg)[0](images), rtol=1e-4, atol=1e-5)
    assert backbone["mean"] == [0.25]


def test_the_torch_backend_is_the_module_itself(exported_run: Path, config_of) -> None:
    cfg = config_of(exported_run)
    module = run_denoiser(cfg)
    assert load_denoiser(cfg, module, "cpu") is module
    encoder, _ = load_encoder(cfg, "torch", "cpu")
    assert isinstance(encoder, torch.nn.Module)


def test_a_missing_export_says_how_to_make_it(fresh_run: Path, config_of) -> None:
    cfg = config_of(fresh_run, "positives.backend=ort")
    with pytest.raises(
        ClspError,
        match=r"no exported model .* positives.backend=ort needs it: run `clsp export CONFIG --onnx --resume`",
    ):
        load_denoiser(cfg, run_denoiser(cfg), "cpu")


def test_a_stale_export_is_refused_naming_what_changed(exported_run: Path, config_of) -> None:
    cfg = config_of(exported_run, "positives.backend=ort", "positives.num_layers=2")
    with pytest.raises(ClspError, match=r"stale \(model.num_layers: 1 -> 2\)"):
        load_denoiser(cfg, run_denoiser(cfg), "cpu")


def test_an_export_from_another_version_is_refused(run_copy: Path, config_of) -> None:
    path = artifact_dir(run_copy, "onnx", "encoder") / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["keyed_versions"]["torch"] = "1.0.0"
    metadata["key"] = "f" * 64
    path.write_text(json.dumps(metadata))
    with pytest.raises(ClspError, match=r"stale \(keyed_versions.torch: 1.0.0 -> "):
        load_encoder(config_of(run_copy), "ort", "cpu")


def test_exports_are_keyed_on_the_torch_release_not_its_build_tag(exported_run: Path, config_of, monkeypatch) -> None:
    """The GPU-export / CPU-serve case: an export made under torch X+cu130 is current under X+cpu."""
    import clsp.export.artifacts as artifacts

    cfg = config_of(exported_run)
    spec = encoder_spec(*run_encoder(cfg))
    here = artifacts.expected_metadata(spec, "torchscript", cfg.export)
    found = artifacts.versions()
    release = found["torch"].split("+")[0]
    assert here["keyed_versions"]["torch"] == release
    monkeypatch.setattr(artifacts, "versions", lambda: {**found, "torch": release + "+cu130"})
    gpu = artifacts.expected_metadata(spec, "torchscript", cfg.export)
    assert gpu["key"] == here["key"] and gpu["versions"]["torch"] == release + "+cu130"
    monkeypatch.setattr(artifacts, "versions", lambda: {**found, "torch": "9.9.9+cpu"})
    assert artifacts.expected_metadata(spec, "torchscript", cfg.export)["key"] != here["key"]


@pytest.mark.parametrize("fmt,backend", [("onnx", "ort"), ("torchscript", "torchscript")])
def test_a_truncated_artifact_is_refused(run_copy: Path, config_of, fmt: str, backend: str) -> None:
    directory = artifact_dir(run_copy, fmt, "encoder")
    model = directory / json.loads((directory / METADATA_FILE).read_text())["file"]
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ClspError, match=r"missing, truncated or corrupt \(SHA-256 differs"):
        load_encoder(config_of(run_copy), backend, "cpu")


@pytest.mark.parametrize("named", ["../../../../outside/evil.onnx", "/etc/passwd", "model.pt", 123, None])
def test_a_sidecar_cannot_name_a_model_outside_its_folder_or_of_another_format(run_copy: Path, config_of, named):
    from clsp.export.artifacts import expected_metadata, is_current

    directory = artifact_dir(run_copy, "onnx", "encoder")
    # a foreign model with a matching SHA-256 next to the run: it must never be opened
    outside = run_copy.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "evil.onnx").write_bytes((directory / "model.onnx").read_bytes())
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["file"] = named
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(
        ClspError, match=r"metadata.json: (field 'file' is .*not a file name|names the model file)"
    ) as e:
        load_encoder(config_of(run_copy), "ort", "cpu")
    assert "\n" not in str(e.value)
    cfg = config_of(run_copy)
    spec = encoder_spec(*run_encoder(cfg))
    assert not is_current(directory, expected_metadata(spec, "onnx", cfg.export))  # `clsp export` rebuilds it


def test_loaders_turn_unreadable_files_into_clear_errors(exported_run: Path, tmp_path: Path) -> None:
    onnx_file = artifact_dir(exported_run, "onnx", "denoiser") / "model.onnx"
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    with pytest.raises(ClspError, match=r"truncated.onnx: not a loadable ONNX file"):
        OrtModel(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(ClspError, match=r"garbage.pt: not a loadable TorchScript file"):
        load_torchscript(garbage)


def test_ort_sessions_do_not_spin_and_run_on_the_cpu(exported_run: Path) -> None:
    model = OrtModel(artifact_dir(exported_run, "onnx", "encoder") / "model.onnx")
    assert model.providers == ["CPUExecutionProvider"]
    options = model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_tensorrt_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClspError, match="TensorRT is not usable here: no CUDA GPU"):
        import_tensorrt()
    with pytest.raises(ClspError, match="pip install 'clsp\\[trt\\]'"):
        TrtModel(tmp_path / "model.engine")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_the_trt_backend_without_tensorrt_says_so_not_export_first(fresh_run: Path, config_of, command) -> None:
    cfg = config_of(fresh_run, "positives.backend=trt")
    with pytest.raises(ClspError, match="TensorRT is not usable here") as e:
        load_denoiser(cfg, run_denoiser(cfg), "cpu")
    assert "clsp export" not in str(e.value)
    result = command("features", fresh_run, "--backend", "trt", "--out", fresh_run / "f.npy")
    assert isinstance(result.exception, ClspError) and "TensorRT is not usable here" in str(result.exception)


@pytest.mark.parametrize(
    "change",
    [
        {"t": torch.tensor([5])},  # batch 1 beside a batch of 3
        {"t": torch.tensor([0, 1000, 3])},  # past T
        {"t": torch.tensor([0.0, 1.0, 2.0])},
        {"w": torch.tensor([0.1, 1.5, 0.1])},
        {"anchor_t": torch.zeros(3, 1, 8, 8)},
    ],
)
def test_exported_denoiser_inputs_are_checked_before_the_backend_sees_them(exported_run: Path, config_of, change):
    cfg = config_of(exported_run, "positives.backend=ort")
    denoiser = load_denoiser(cfg, run_denoiser(cfg), "cpu")
    good = {
        "x_t": torch.zeros(3, 1, 16, 16),
        "anchor_t": torch.zeros(3, 1, 16, 16),
        "t": torch.tensor([0, 500, 999]),
        "w": torch.full((3,), 0.1),
    }
    assert denoiser(**good).shape == (3, 1, 16, 16)
    with pytest.raises(ClspError, match="denoiser input") as e:
        denoiser(**{**good, **change})
    assert "\n" not in str(e.value)
