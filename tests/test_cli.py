"""The clsp command as a user runs it: real subprocesses, real exit codes, real files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def clsp(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clsp.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "command",
    [[], ["info"], ["data"], ["data", "show"], ["eval"], ["compare"], ["demo"], ["export"], ["features"]],
)
def test_help_on_every_command(command: list[str]) -> None:
    result = clsp(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_info_lists_versions_and_backends() -> None:
    result = clsp("info")
    assert result.returncode == 0, result.stderr
    for needle in ("torch", "diffusers", "backend onnxruntime", "backend tensorrt", "cuda"):
        assert needle in result.stdout


def test_data_show_writes_grid_and_resolved_config(tmp_path: Path) -> None:
    result = clsp("data", "show", "configs/digits.yaml", "--set", f"run.output_dir={tmp_path}", "--n", "16")
    assert result.returncode == 0, result.stderr
    assert "1347 x 16x16x1 uint8" in result.stdout
    grid = np.asarray(Image.open(tmp_path / "data" / "train_samples.png"))
    assert grid.shape[0] > 64 and grid.std() > 20  # two rows of enlarged digits, not a blank image
    resolved = (tmp_path / "data" / "config.yaml").read_text()
    assert f"output_dir: {tmp_path}" in resolved and "source: digits" in resolved


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data", "show", "missing.yaml"], "config file 'missing.yaml' not found"),
        (["data", "show", "configs/digits.yaml", "--set", "data.image_size=-3"], "data.image_size"),
        (["data", "show", "configs/digits.yaml", "--set", "data.sorce=digits"], "unknown key 'data.sorce'"),
        (["data", "show", "configs/cifar10_simclr_clsp.yaml", "--set", "data.root=/nonexistent"], "--download"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args: list[str], needle: str, tmp_path: Path) -> None:
    result = clsp(*args, "--set", f"run.output_dir={tmp_path}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0]


@pytest.mark.parametrize(
    ("code", "needle"),
    [(28, "No space left on device; "), (30, "make the folder writable, or set another run.output_dir")],
)
def test_a_full_disk_or_read_only_folder_is_one_line(monkeypatch, capsys, tmp_path: Path, code: int, needle: str):
    """ENOSPC / EROFS from any command (a full or read-only disk cannot be made here without root mounts)."""
    import os

    import clsp.cli

    def failing() -> None:
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "ssl" / "backbone.safetensors"))

    monkeypatch.setattr(clsp.cli, "app", failing)
    with pytest.raises(SystemExit) as e:
        clsp.cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "backbone.safetensors: " in err and needle in err


def test_messages_keep_their_brackets(capsys) -> None:
    from clsp.progress import print_error, warn

    warn("pip install 'clsp[trt]' for shape [batch,1,16,16]")
    print_error("see [red]this[/]")
    err = capsys.readouterr().err
    assert "pip install 'clsp[trt]' for shape [batch,1,16,16]" in err and "see [red]this[/]" in err
