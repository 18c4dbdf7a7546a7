"""runtime/cpp: the C++ runner builds against the torch wheel's libtorch and matches Python's features."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clsp.export.artifacts import artifact_dir
from clsp.export.specs import run_encoder

CPP_DIR = Path(__file__).resolve().parents[2] / "runtime" / "cpp"


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("c++")), reason="needs cmake and a C++ compiler")
def test_cpp_runner_matches_python(exported_run: Path, tmp_path: Path, config_of) -> None:
    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", CPP_DIR, "-B", build, f"-DPython_EXECUTABLE={sys.executable}"], capture_output=True, text=True
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", build, "-j", "2"], capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    images = np.random.default_rng(0).standard_normal((7, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    model = artifact_dir(exported_run, "torchscript", "encoder") / "model.pt"
    ran = subprocess.run(
        [build / "clsp_features", model, tmp_path / "images.npy", tmp_path / "features.npy"],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr
    encoder, _ = run_encoder(config_of(exported_run))
    with torch.no_grad():
        expected = encoder(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "features.npy"), expected, rtol=1e-4, atol=1e-4)
    bad = subprocess.run([build / "clsp_features", model, model, tmp_path / "x.npy"], capture_output=True, text=True)
    assert bad.returncode == 1 and "not a .npy file" in bad.stderr
