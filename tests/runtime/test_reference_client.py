"""The torch-free reference client (runtime/reference_client.py) reproduces clsp from the artifact folder alone.

The client runs in a subprocess where ``import torch`` and ``import clsp`` fail, and reads only
``export/onnx/{encoder,denoiser}/``; its features and positives are compared with clsp's own.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clsp.config import ExportConfig
from clsp.contrastive.backbones import build_backbone, save_backbone
from clsp.diffusion.noise import NoiseStreams
from clsp.diffusion.sampler import (
    SamplerSettings,
    images_to_model,
    interpolation_step,
    make_scheduler,
    model_to_images,
    sample_positives,
)
from clsp.export.artifacts import METADATA_FILE, artifact_dir, artifact_precision
from clsp.export.build import export_run
from clsp.export.specs import run_denoiser
from clsp.runtime.load import load_denoiser

CLIENT = Path(__file__).resolve().parents[2] / "runtime" / "reference_client.py"
BLOCK = "import sys; sys.modules['torch'] = None; sys.modules['clsp'] = None; "
LOAD = (
    "import importlib.util; "
    f"spec = importlib.util.spec_from_file_location('reference_client', {str(CLIENT)!r}); "
    "client = importlib.util.module_from_spec(spec); spec.loader.exec_module(client); "
)


def run_without_torch(code: str, status: int = 0) -> str:
    """Run ``code`` in a fresh Python whose ``import torch`` and ``import clsp`` fail; returns its stderr."""
    done = subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr
    return done.stderr


def run_client(*args: object, status: int = 0) -> str:
    """``reference_client.py ARGS`` as a script, without torch; returns its stderr."""
    argv = ["reference_client.py", *(str(a) for a in args)]
    return run_without_torch(
        f"import runpy; sys.argv = {argv!r}; runpy.run_path({str(CLIENT)!r}, run_name='__main__')", status
    )


def image_folder(root: Path) -> Path:
    """Image files of every kind a folder holds: RGB, grey, palette and RGBA, non-square, up- and downscaled,
    one already at the encoder's 16 x 16, a JPEG, and a hidden file both sides skip."""
    rng = np.random.default_rng(0)
    root.mkdir()

    def picture(height: int, width: int, channels: int) -> np.ndarray:
        return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)

    Image.fromarray(picture(28, 20, 3)).save(root / "rgb_tall.png")
    Image.fromarray(picture(24, 40, 1)[..., 0]).save(root / "grey_wide.png")
    Image.fromarray(picture(16, 16, 3)).save(root / "rgb_square.png")
    Image.fromarray(picture(9, 7, 1)[..., 0]).save(root / "grey_small.png")
    Image.fromarray(picture(48, 64, 3)).save(root / "rgb_big.jpg", quality=90)
    Image.fromarray(picture(18, 30, 3)).convert("P").save(root / "palette.png")
    Image.fromarray(picture(23, 17, 4)).save(root / "rgba.png")
    (root / ".DS_Store").write_bytes(b"not an image")
    return root


@pytest.fixture
def rgb_run(tmp_path_factory: pytest.TempPathFactory, config_of) -> Path:
    """A run whose only model is a 3-channel encoder with per-channel mean/std, exported to ONNX."""
    root = tmp_path_factory.mktemp("rgb") / "run"
    torch.manual_seed(1)
    encoder, dim = build_backbone("small-cnn", in_channels=3)
    spec = {"backbone": "small-cnn", "stem": "cifar", "in_channels": 3, "feature_dim": dim, "image_size": 16}
    save_backbone(encoder, root / "ssl", {**spec, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]})
    export_run(config_of(root), ("onnx",), models=("encoder",))
    return root


@pytest.mark.parametrize("run", ["exported_run", "rgb_run"])
def test_features_from_image_files_equal_clsp_features(run: str, request, tmp_path: Path, command) -> None:
    root = request.getfixturevalue(run)
    folder = image_folder(tmp_path / "images")
    result = command("features", root, "--backend", "ort", "--input", folder, "--out", tmp_path / "clsp.npy")
    assert result.exit_code == 0, result.output
    run_client("features", artifact_dir(root, "onnx", "encoder"), folder, "--out", tmp_path / "client.npy")
    reference, features = np.load(tmp_path / "clsp.npy"), np.load(tmp_path / "client.npy")
    assert features.shape == reference.shape == (7, 256) and features.dtype == np.float32
    np.testing.assert_allclose(features, reference, rtol=0, atol=1e-5)


def test_the_client_refuses_other_artifacts_and_bad_input_in_one_line(exported_run: Path, tmp_path: Path) -> None:
    torchscript = artifact_dir(exported_run, "torchscript", "encoder")
    error = run_client("features", torchscript, tmp_path, "--out", tmp_path / "f.npy", status=2)
    assert (
        error
        == f"error: {torchscript}: holds the torchscript encoder export; point at <output_dir>/export/onnx/encoder\n"
    )
    np.save(tmp_path / "anchors.npy", np.zeros((2, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "noise.npz", x_T=np.zeros((2, 1, 8, 8), np.float32))
    denoiser = artifact_dir(exported_run, "onnx", "denoiser")
    args = ("sample", denoiser, "--anchors", tmp_path / "anchors.npy", "--out", tmp_path / "p.npy", "--noise")
    error = run_client(*args, tmp_path / "noise.npz", status=2)
    assert error.startswith("error: ") and "needs arrays x_T and anchor_noise" in error and error.count("\n") == 1
    np.savez(tmp_path / "noise.npz", x_T=np.zeros((2, 1, 8, 8), np.float32), anchor_noise=np.zeros((10, 2, 1, 8, 8)))
    error = run_client(*args, tmp_path / "noise.npz", status=2)
    assert error == "error: anchors are [2, 8, 8, 1]; the denoiser takes [B, 16, 16, 1]\n"


@pytest.mark.parametrize("named", ["../../../../outside/evil.onnx", "/etc/passwd", 123])
def test_the_client_opens_only_the_model_file_inside_the_artifact_folder(run_copy: Path, tmp_path: Path, named):
    encoder = artifact_dir(run_copy, "onnx", "encoder")
    metadata = json.loads((encoder / METADATA_FILE).read_text())
    (encoder / METADATA_FILE).write_text(json.dumps({**metadata, "file": named}))
    error = run_client("features", encoder, tmp_path, "--out", tmp_path / "f.npy", status=2)
    assert error.startswith(f"error: {encoder / METADATA_FILE}: field 'file' is ") and error.count("\n") == 1
    assert "not 'model.onnx'" in error


def test_the_client_refuses_a_missing_out_folder_and_non_finite_noise(exported_run: Path, tmp_path: Path) -> None:
    denoiser = artifact_dir(exported_run, "onnx", "denoiser")
    np.save(tmp_path / "anchors.npy", np.zeros((2, 16, 16, 1), np.uint8))
    metadata = json.loads((denoiser / METADATA_FILE).read_text())
    steps = metadata["sampler"]["num_steps"]
    noise = {"x_T": np.zeros((2, 1, 16, 16), np.float32), "anchor_noise": np.zeros((steps, 2, 1, 16, 16), np.float32)}
    if metadata["sampler"]["eta"] > 0:
        noise["z"] = np.zeros((steps, 2, 1, 16, 16), np.float32)
    noise["x_T"][0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "noise.npz", **noise)
    args = ("sample", denoiser, "--anchors", tmp_path / "anchors.npy", "--noise", tmp_path / "noise.npz", "--out")
    error = run_client(*args, tmp_path / "p.npy", status=2)
    assert error == "error: noise: x_T holds NaN or infinite values; draw standard normal noise\n"
    error = run_client(*args, tmp_path / "missing" / "p.npy", status=2)
    assert error.startswith("error: --out ") and "does not exist; create it first" in error and error.count("\n") == 1


def test_metadata_states_the_whole_contract_and_the_real_precision(exported_run: Path) -> None:
    encoder = json.loads((artifact_dir(exported_run, "onnx", "encoder") / METADATA_FILE).read_text())
    denoiser = json.loads((artifact_dir(exported_run, "onnx", "denoiser") / METADATA_FILE).read_text())
    assert encoder["precision"] == denoiser["precision"] == "fp32"
    assert artifact_precision("trt", ExportConfig(trt_precision="fp16")) == "fp16"
    assert encoder["preprocessing"]["layout"] == "NCHW" and "uint8 / 255" in encoder["preprocessing"]["value_range"]
    assert "before the SSL projector" in encoder["output"]["features"]
    sampler = denoiser["sampler"]
    assert sampler["timestep_spacing"] == "trailing" and sampler["timesteps"] == list(range(999, 0, -100))
    assert sampler["set_alpha_to_one"] is True and sampler["clip_sample"] is False
    assert sampler["prediction_type"] == "epsilon" and sampler["alphas_cumprod_prev"][-1] == 1.0
    assert "precision" not in sampler and "trunc" in denoiser["output"]


def test_reused_export_gets_the_current_sampler_contract(run_copy: Path, config_of) -> None:
    results = export_run(config_of(run_copy, "positives.num_steps=20"), ("onnx",), resume=True)
    assert [r.rebuilt for r in results] == [False, False]
    metadata = json.loads((artifact_dir(run_copy, "onnx", "denoiser") / METADATA_FILE).read_text())
    assert metadata["sampler"]["num_steps"] == 20 and len(metadata["sampler"]["timesteps"]) == 20


def test_sampler_steps_and_loop_equal_clsp_sampler_with_the_same_noise(
    exported_run: Path, config_of, tmp_path: Path
) -> None:
    cfg = config_of(exported_run, "positives.backend=ort")
    settings = SamplerSettings.from_config(cfg)
    assert settings.eta > 0 and settings.num_steps == 10  # z is drawn: every noise input is exercised
    module = run_denoiser(cfg)
    generator = torch.Generator().manual_seed(3)
    anchors = torch.randint(0, 256, (3, 16, 16, 1), dtype=torch.uint8, generator=generator)
    x0, w = images_to_model(anchors), torch.tensor([0.1, 0.5, 1.0])
    # every step of the grid on its own, against the torch module: x_t, anchor noise and z per step
    scheduler = make_scheduler(settings)
    x_t, anchor_noise, z = torch.randn(3, settings.num_steps, 3, 1, 16, 16, generator=generator)
    with torch.no_grad():
        steps = [
            interpolation_step(module, scheduler, x_t[i], x0, t, w, anchor_noise[i], z[i], settings.eta)
            for i, t in enumerate(scheduler.timesteps.tolist())
        ]
    # the whole loop on the same ONNX model, with the noise clsp's sampler draws: x_T, then per step ε' and z
    image_indices, candidate_indices, seed = torch.tensor([0, 5, 9]), torch.tensor([0, 1, 0]), 11
    streams = NoiseStreams(seed, image_indices, candidate_indices)
    x_T = streams.draw((1, 16, 16), torch.device("cpu"))
    draws = torch.stack([streams.draw((1, 16, 16), torch.device("cpu")) for _ in range(2 * settings.num_steps)])
    ort = load_denoiser(cfg, module, "cpu")
    loop = sample_positives(ort, x0, w, image_indices, candidate_indices, seed, settings)
    arrays = {"anchors": anchors, "w": w, "x_t": x_t, "anchor_noise": anchor_noise, "z": z, "x_T": x_T}
    arrays |= {"loop_anchor_noise": draws[0::2], "loop_z": draws[1::2], "clsp_loop": loop}
    np.savez(tmp_path / "inputs.npz", **{name: value.numpy() for name, value in arrays.items()})
    directory = str(artifact_dir(exported_run, "onnx", "denoiser"))
    inputs, outputs = str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")
    run_without_torch(
        LOAD + "import numpy as np; "
        f"a = dict(np.load({inputs!r})); metadata, session = client.load_artifact({directory!r}, 'denoiser'); "
        "x0 = client.anchors_to_model(a['anchors']); "
        "steps = [client.ddim_step(session, a['x_t'][i], x0, t, factors, a['w'], a['anchor_noise'][i], a['z'][i]) "
        "for i, (t, factors) in enumerate(client.schedule(metadata['sampler']))]; "
        f"loop = client.sample({directory!r}, a['anchors'], a['x_T'], a['loop_anchor_noise'], a['loop_z'], a['w']); "
        f"np.savez({outputs!r}, steps=steps, loop=loop, images=client.to_uint8(loop), clsp=client.to_uint8(a['clsp_loop']))"
    )
    out = np.load(tmp_path / "outputs.npz")
    np.testing.assert_allclose(out["steps"], torch.stack(steps).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["loop"], loop.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["clsp"], model_to_images(loop))  # the same truncation to uint8
    np.testing.assert_array_equal(out["images"], model_to_images(loop))
