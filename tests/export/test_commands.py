"""``clsp export`` and ``clsp features`` as typer commands (clsp/export/commands.py)."""

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from clsp.errors import ClspError
from clsp.export.commands import export_command, features_command

app = typer.Typer()
app.command("export")(export_command)
app.command("features")(features_command)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "240"})


def test_help_says_torchscript_is_deprecated() -> None:
    result = invoke("export", "--help")
    assert result.exit_code == 0
    assert "Deprecated by PyTorch" in result.output and "--no-check" in result.output


def test_export_then_features_through_the_commands(run_copy: Path, tmp_path: Path, repo_root: Path) -> None:
    config = repo_root / "configs" / "digits.yaml"
    result = invoke("export", config, "--torchscript", "--set", f"run.output_dir={run_copy}")
    assert result.exit_code == 0, result.output
    assert "denoiser torchscript" in result.output and "up to date" in result.output
    out = tmp_path / "features.npy"
    result = invoke(
        "features",
        config,
        "--backend",
        "torchscript",
        "--split",
        "test",
        "--out",
        out,
        "--set",
        f"run.output_dir={run_copy}",
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (450, 256) and "torchscript" in result.output


def test_user_errors_are_clsp_errors(run_copy: Path, tmp_path: Path, repo_root: Path) -> None:
    config = repo_root / "configs" / "digits.yaml"
    result = invoke("features", config, "--backend", "onnx", "--out", tmp_path / "f.npy")
    assert isinstance(result.exception, ClspError) and "use one of torch, ort" in str(result.exception)
    result = invoke("features", config, "--split", "test", "--input", tmp_path, "--out", tmp_path / "f.npy")
    assert isinstance(result.exception, ClspError) and "not both" in str(result.exception)


@pytest.mark.parametrize("flag", ["--trt"])
def test_export_trt_here_is_a_clear_error(run_copy: Path, repo_root: Path, flag: str) -> None:
    result = invoke("export", repo_root / "configs" / "digits.yaml", flag, "--set", f"run.output_dir={run_copy}")
    if not isinstance(result.exception, ClspError):
        pytest.skip("this machine can build TensorRT engines")
    assert "TensorRT is not usable here" in str(result.exception)
