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


def registered_commands() -> list[tuple[str, ...]]:
    """Every command path the Typer app registers (groups included), read from the app, not listed by hand."""
    import typer.main

    from clsp.cli import app

    def walk(command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [path]
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found += walk(sub, (*path, name))
        return found

    return walk(typer.main.get_command(app), ())


def leaf_command(path: tuple[str, ...]):
    import typer.main

    from clsp.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def run_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``clsp ARGS`` through the entry point (its one-line error handling included): exit code, stdout, stderr."""
    import clsp.cli

    monkeypatch.setattr(sys, "argv", ["clsp", *args])
    with pytest.raises(SystemExit) as e:
        clsp.cli.main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_the_walk_finds_every_command_group() -> None:
    paths = registered_commands()
    for expected in [("demo",), ("train",), ("transfer",), ("positives", "generate"), ("diffusion", "preview")]:
        assert expected in paths
    assert len(paths) >= 20


@pytest.mark.parametrize("path", registered_commands(), ids=lambda p: " ".join(p) or "clsp")
def test_every_command_has_help_and_refuses_a_missing_input_in_one_line(monkeypatch, capsys, path) -> None:
    code, out, _ = run_in_process(monkeypatch, capsys, *path, "--help")
    assert code == 0 and "Usage" in out
    command = leaf_command(path)
    if hasattr(command, "commands"):
        return  # a group: --help is what it does
    args = []
    for param in command.params:
        if param.param_type_name == "argument" and (param.required or not args):
            args.append("missing-input.yaml")  # a config, store, run folder or array that is not there
        elif param.param_type_name == "option" and param.required:
            args += [param.opts[0], "out.npy"]
    if not args:
        args = ["--no-such-option"]
    code, _, err = run_in_process(monkeypatch, capsys, *path, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    if args[0] == "missing-input.yaml":
        assert len(lines) == 1 and lines[0].startswith("error:") and "missing-input" in lines[0], err


def test_info_lists_versions_and_backends() -> None:
    result = clsp("info")
    assert result.returncode == 0, result.stderr
    for needle in ("torch", "diffusers", "backend onnxruntime", "backend tensorrt", "cuda"):
        assert needle in result.stdout


def test_data_show_writes_grid_and_resolved_config(tmp_path: Path) -> None:
    result = clsp("data", "show", "configs/digits.yaml", "--set", f"run.output_dir={tmp_path}", "--images", "16")
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
