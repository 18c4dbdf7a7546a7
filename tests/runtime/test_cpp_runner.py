"""runtime/cpp: the C++ runner builds against the torch wheel's libtorch, checks metadata.json like the Python
runtime, normalises uint8 images itself and matches Python's features; wrong inputs get one-line errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clsp.data import ImageSet, load_images
from clsp.export.artifacts import artifact_dir
from clsp.features import normalise_images
from clsp.runtime.features import encode_images

CPP_DIR = Path(__file__).resolve().parents[2] / "runtime" / "cpp"
pytestmark = [
    pytest.mark.slow,  # the build takes ~20-30 s on two cores
    pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("c++")), reason="needs cmake and a C++ compiler"),
]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("cpp")
    configure = subprocess.run(
        ["cmake", "-S", CPP_DIR, "-B", build, f"-DPython_EXECUTABLE={sys.executable}"], capture_output=True, text=True
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", build, "-j", "2"], capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return build / "clsp_features"


def run(runner: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([runner, *args], capture_output=True, text=True)


def test_uint8_images_give_the_python_features(runner: Path, exported_run: Path, tmp_path: Path, config_of) -> None:
    cfg = config_of(exported_run)
    images = load_images(cfg.data, "test").images[:300]  # two of the runner's batches of 256
    np.save(tmp_path / "images.npy", images)
    encoder = artifact_dir(exported_run, "torchscript", "encoder")
    ran = run(runner, encoder, tmp_path / "images.npy", tmp_path / "features.npy")
    assert ran.returncode == 0, ran.stderr
    expected = encode_images(cfg, "torch", ImageSet("test", images)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "features.npy"), expected, rtol=0, atol=1e-5)

    facts = json.loads((encoder / "metadata.json").read_text())["model"]  # or float32 NCHW, normalised
    np.save(tmp_path / "normalised.npy", normalise_images(images, facts["mean"], facts["std"]).numpy())
    ran = run(runner, encoder / "model.pt", tmp_path / "normalised.npy", tmp_path / "from_float.npy")
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_allclose(np.load(tmp_path / "from_float.npy"), expected, rtol=0, atol=1e-5)


def one_line_error(ran: subprocess.CompletedProcess, *phrases: str) -> None:
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stderr.startswith("error: ") and ran.stderr.count("\n") == 1, ran.stderr
    for phrase in phrases:
        assert phrase in ran.stderr, ran.stderr


def test_wrong_inputs_and_stale_or_foreign_artifacts_get_one_line(
    runner: Path, exported_run: Path, tmp_path: Path
) -> None:
    assert "IMAGES.npy    uint8 [N, H, W, C]" in run(runner, "--help").stdout
    encoder = Path(shutil.copytree(artifact_dir(exported_run, "torchscript", "encoder"), tmp_path / "encoder"))
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 16, 16, 1), np.uint8))
    out = tmp_path / "features.npy"
    np.save(tmp_path / "rgb.npy", np.zeros((2, 16, 16, 3), np.uint8))
    one_line_error(
        run(runner, encoder, tmp_path / "rgb.npy", out),
        "uint8 [2, 16, 16, 3] but the encoder takes uint8 [N, 16, 16, 1] (NHWC)",
    )
    np.save(tmp_path / "float64.npy", np.zeros((2, 16, 16, 1)))
    one_line_error(run(runner, encoder, tmp_path / "float64.npy", out), "dtype <f8; give uint8 [N, H, W, C]")
    one_line_error(run(runner, encoder, encoder / "model.pt", out), "model.pt: not a .npy file")
    denoiser = artifact_dir(exported_run, "torchscript", "denoiser")
    one_line_error(run(runner, denoiser, good, out), "holds the denoiser, not the encoder")
    one_line_error(
        run(runner, artifact_dir(exported_run, "onnx", "encoder"), good, out), "holds the onnx export, not TorchScript"
    )
    one_line_error(run(runner, tmp_path, good, out), "metadata.json: missing (not a clsp export)")
    one_line_error(run(runner, tmp_path / "nowhere", good, out), f"{tmp_path / 'nowhere'}: no such folder or file")

    metadata = json.loads((encoder / "metadata.json").read_text())
    (encoder / "metadata.json").write_text(json.dumps({**metadata, "keyed_versions": {"torch": "1.0.0+cpu"}}))
    one_line_error(run(runner, encoder, good, out), "exported with torch 1.0.0+cpu but this runner links libtorch")
    (encoder / "metadata.json").write_text(json.dumps({**metadata, "file": "../../../outside/model.pt"}))
    one_line_error(run(runner, encoder, good, out), "metadata.json: field 'file' is \"../../../outside/model.pt\"")
    (encoder / "metadata.json").write_text(json.dumps(metadata))
    with open(encoder / "model.pt", "ab") as model:
        model.write(b"tampered")
    one_line_error(run(runner, encoder, good, out), "model.pt: missing, truncated or corrupt (SHA-256 differs")
    assert not out.exists()


def test_the_binary_copied_with_a_lib_folder_runs_anywhere(runner: Path, exported_run: Path, tmp_path: Path) -> None:
    import torch

    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy2(runner, deploy / "clsp_features")
    # lib/ beside the copy: here a link to the wheel's libtorch folder (a CUDA wheel's libtorch finds its CUDA
    # libraries relative to its own folder; a CPU libtorch's lib/ can be copied as it is)
    (deploy / "lib").symlink_to(Path(torch.__file__).parent / "lib", target_is_directory=True)
    np.save(tmp_path / "images.npy", np.zeros((2, 16, 16, 1), np.uint8))
    encoder = artifact_dir(exported_run, "torchscript", "encoder")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    args = [deploy / "clsp_features", encoder, tmp_path / "images.npy", tmp_path / "f.npy"]
    ran = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    dynamic = subprocess.run(["readelf", "-d", deploy / "clsp_features"], capture_output=True, text=True).stdout
    assert "(RUNPATH)" in dynamic and "[$ORIGIN/lib]" in dynamic, dynamic
    (deploy / "lib").unlink()  # without it the binary must not find the build machine's libtorch
    ran = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ran.returncode == 127 and "libtorch" in ran.stderr
