"""``clsp export`` and ``clsp features`` as typer commands (clsp/export/commands.py)."""

import json
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from clsp.contrastive.train import train_ssl
from clsp.data import ImageSet, load_images
from clsp.errors import ClspError
from clsp.export.artifacts import METADATA_FILE, artifact_dir
from clsp.export.commands import export_command, features_command
from clsp.runtime.features import encode_images

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
    result = invoke("export", config, "--torchscript", "--resume", "--set", f"run.output_dir={run_copy}")
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


def tensorrt_problem() -> str | None:
    """Why this machine cannot build TensorRT engines (the error ``--trt`` must print), or None when it can."""
    from clsp.runtime.trt import import_tensorrt

    try:
        import_tensorrt()
    except ClspError as e:
        return str(e)
    return None


def test_export_trt_builds_engines_or_says_clearly_why_not(run_copy: Path, command) -> None:
    problem = tensorrt_problem()
    result = command("export", run_copy, "--trt")
    if problem is None:  # a CUDA machine with TensorRT: the engines are built and checked
        assert result.exit_code == 0, result.output
        assert "denoiser trt" in result.output and "encoder trt" in result.output
    else:  # anything but this one-line refusal (a crash, a traceback from deep inside) fails
        assert isinstance(result.exception, ClspError), result.output
        assert str(result.exception) == problem and "TensorRT is not usable here" in problem
        assert not (run_copy / "export" / "trt").exists()


def test_export_onnx_only_and_without_the_parity_check(fresh_run: Path, command) -> None:
    result = command("export", fresh_run, "--onnx", "--no-check")
    assert result.exit_code == 0, result.output
    assert result.output.count("not checked") == 2 and "denoiser onnx" in result.output
    assert sorted(p.name for p in (fresh_run / "export").iterdir()) == ["config.yaml", "onnx"]  # not export.formats
    for kind in ("denoiser", "encoder"):
        metadata = json.loads((artifact_dir(fresh_run, "onnx", kind) / METADATA_FILE).read_text())
        assert metadata["parity"] is None  # export.check is true: --no-check overrode it
    refused = command("export", fresh_run, "--onnx")
    assert isinstance(refused.exception, ClspError) and "--resume to keep the current ones" in str(refused.exception)
    again = command("export", fresh_run, "--onnx", "--resume")
    assert again.exit_code == 0, again.output
    assert again.output.count("up to date") == 2


def test_features_of_an_image_folder_saved_as_safetensors(
    exported_run: Path, tmp_path: Path, command, config_of
) -> None:
    digits = load_images(config_of(exported_run).data, "test")
    folder = tmp_path / "images"
    for i in range(6):  # grey PNGs in one folder per class: read as RGB, given to the 1-channel encoder as grey
        (folder / f"class{digits.labels[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i, :, :, 0]).save(folder / f"class{digits.labels[i]}" / f"{i}.png")
    out = tmp_path / "features.safetensors"
    result = command("features", exported_run, "--backend", "ort", "--input", folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert "folder:images: 6 x (16, 16, 1)" in result.output
    saved = load_file(out)
    order = sorted(range(6), key=lambda i: (f"class{digits.labels[i]}", f"{i}.png"))  # files are read sorted
    classes = sorted({f"class{label}" for label in digits.labels[:6]})
    assert saved["labels"].tolist() == [classes.index(f"class{digits.labels[i]}") for i in order]
    expected = encode_images(config_of(exported_run), "torch", ImageSet("digits", digits.images[order]))
    torch.testing.assert_close(saved["features"], expected, rtol=1e-4, atol=1e-5)
    listed = (tmp_path / "features.files.txt").read_text().splitlines()
    assert listed == [f"class{digits.labels[i]}/{i}.png" for i in order]  # the file of every row, in row order


def test_features_of_a_folder_with_a_bad_file_name_the_rows_and_the_right_option(
    exported_run: Path, tmp_path: Path, command
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        Image.new("L", (16, 16), 7).save(folder / name)
    (folder / "b.png").write_bytes(b"not a png")
    out = tmp_path / "f.npy"
    result = command("features", exported_run, "--input", folder, "--out", out)
    assert isinstance(result.exception, ClspError) and "(--set data.skip_bad_images=true)" in str(result.exception)
    result = command("features", exported_run, "--input", folder, "--out", out, "--set", "data.skip_bad_images=true")
    assert result.exit_code == 0, result.output
    assert np.load(out).shape[0] == 2 and (tmp_path / "f.files.txt").read_text() == "a.png\nc.png\n"
    assert "images / s (encoding)" in result.output and "start-up" in result.output


def test_retraining_the_encoder_makes_its_export_stale(run_copy: Path, tmp_path: Path, command, config_of) -> None:
    ssl = ["ssl.epochs=1", "ssl.clsp_weight=0", "ssl.num_workers=0", "ssl.projector_hidden_dim=64"]
    train_ssl(config_of(run_copy, *ssl), overwrite=True)  # `clsp train --overwrite`: a new backbone.safetensors
    out = tmp_path / "features.npy"
    result = command("features", run_copy, "--backend", "ort", "--split", "test", "--out", out)
    assert isinstance(result.exception, ClspError), result.output
    assert "export is stale" in str(result.exception) and "source_sha256" in str(result.exception)
    assert "run `clsp export CONFIG --onnx --resume`" in str(result.exception) and not out.exists()
    rebuilt = command("export", run_copy, "--onnx", "--resume")
    assert rebuilt.exit_code == 0, rebuilt.output
    lines = {line.split(" onnx")[0].strip("│ "): line for line in rebuilt.output.splitlines() if " onnx " in line}
    assert "up to date" in lines["denoiser"] and "built in" in lines["encoder"]
    result = command("features", run_copy, "--backend", "ort", "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (450, 256)


def test_features_refuses_bad_options_before_any_work(tmp_path: Path, command) -> None:
    """The run has no encoder, so a check made after loading it (or after encoding) would report that instead."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder.npy").mkdir()
    npy = tmp_path / "f.npy"
    cases = [
        (("--split", "trian", "--out", npy), "split 'trian' is not a split of digits; use one of: train, test"),
        (("--out", tmp_path / "f.csv"), "use a .npy or .safetensors file name"),
        (("--out", tmp_path / "folder.npy"), "is a folder; give a file name"),
        (("--out", tmp_path / "file" / "f.npy"), f"'{tmp_path / 'file'}' is a file, not a folder"),
        (("--device", "tpu", "--out", npy), "--device 'tpu': use auto, cpu, cuda or cuda:N"),
        (("--device", "cuda:99", "--out", npy), "--device cuda:99: "),
    ]
    for args, needle in cases:
        result = command("features", tmp_path / "run", *args)
        assert isinstance(result.exception, ClspError), result.output
        assert needle in str(result.exception), str(result.exception)
    assert not npy.exists()


def test_features_input_errors_name_the_input_option(fresh_run: Path, tmp_path: Path, command) -> None:
    (tmp_path / "file.png").write_text("not a folder")
    result = command("features", fresh_run, "--input", tmp_path / "file.png", "--out", tmp_path / "f.npy")
    assert isinstance(result.exception, ClspError), result.output
    expected = f"--input '{tmp_path / 'file.png'}' is not a folder; point --input at a folder of images"
    assert str(result.exception) == expected
