"""Which encoder `clsp export` and `clsp features` use: --run, the run's own ssl/, or a demo's recorded result
(clsp/export/encoder_source.py); asking for something that builds nothing is an error."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clsp.contrastive.backbones import load_backbone, save_backbone
from clsp.data import ImageSet, load_images
from clsp.demo import result_encoder
from clsp.errors import ClspError
from clsp.export.artifacts import METADATA_FILE, artifact_dir
from clsp.positives.generate import unet_content_hash
from clsp.run_layout import DEMO_RESULT_FILE
from clsp.runtime.features import encode_images


def perturbed_copy(source: Path, target: Path) -> Path:
    """``source``'s encoder folder copied to ``target`` with other BatchNorm statistics (other features)."""
    encoder, spec = load_backbone(source)
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.add_(0.3)
    save_backbone(encoder, target, spec)
    return target


@pytest.fixture
def demo_folder(fresh_run: Path, config_of) -> Path:
    """A `clsp demo` layout: the shared unet/, two variants' encoders under seed0/, demo.json naming its result."""
    clsp_run = fresh_run / "seed0" / "clsp-simclr"
    clsp_run.mkdir(parents=True)
    shutil.move(fresh_run / "ssl", clsp_run / "ssl")
    perturbed_copy(clsp_run / "ssl", fresh_run / "seed0" / "simclr" / "ssl")
    record = {"encoder": result_encoder(config_of(fresh_run), [0])}
    (fresh_run / DEMO_RESULT_FILE).write_text(json.dumps(record))
    return fresh_run


def exported_source(root: Path, fmt: str = "torchscript") -> str:
    return json.loads((artifact_dir(root, fmt, "encoder") / METADATA_FILE).read_text())["source_sha256"]


def encoder_hash(folder: Path) -> str:
    return unet_content_hash(load_backbone(folder)[0])


def test_the_demo_records_the_clsp_variant_of_the_first_seed(config_of, tmp_path: Path) -> None:
    cfg = config_of(tmp_path)
    assert result_encoder(cfg, [3, 4]) == {"run": "seed3/clsp-simclr", "variant": "clsp-simclr", "seed": 3}


def test_export_after_a_demo_exports_its_result_and_says_which(demo_folder: Path, command, tmp_path: Path) -> None:
    result = command("export", demo_folder, "--torchscript", "--models", "encoder")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "(the demo's result in demo.json: clsp-simclr, seed 0)" in text and "encoder torchscript" in text
    assert exported_source(demo_folder) == encoder_hash(demo_folder / "seed0" / "clsp-simclr" / "ssl")
    out = tmp_path / "features.npy"  # clsp features finds the same encoder, and so its export
    result = command("features", demo_folder, "--backend", "torchscript", "--out", out)
    assert result.exit_code == 0, result.output
    assert "the demo's result" in " ".join(result.output.split()) and np.load(out).shape == (450, 256)


def test_run_option_picks_another_encoder_for_export_and_features(
    demo_folder: Path, command, config_of, tmp_path: Path
) -> None:
    other = demo_folder / "seed0" / "simclr"
    result = command("export", demo_folder, "--onnx", "--models", "encoder", "--run", other)
    assert result.exit_code == 0, result.output
    assert exported_source(demo_folder, "onnx") == encoder_hash(other / "ssl")
    assert f"{other / 'ssl'} (--run)" in " ".join(result.output.split())
    refused = command("features", demo_folder, "--backend", "ort", "--out", tmp_path / "f.npy")
    assert isinstance(refused.exception, ClspError), refused.output  # the demo's result was not exported
    assert "stale" in str(refused.exception) and "source_sha256" in str(refused.exception)
    cfg = config_of(demo_folder)
    digits = load_images(cfg.data, "test")
    images = ImageSet("digits", digits.images[:20])
    features = encode_images(cfg, "ort", images, run=other)
    torch.testing.assert_close(features, encode_images(cfg, "torch", images, run=other), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(features, encode_images(cfg, "torch", images), atol=1e-3)  # really another encoder


def test_no_encoder_found_is_one_line_that_lists_the_runs_to_pick(demo_folder: Path, command) -> None:
    (demo_folder / DEMO_RESULT_FILE).unlink()  # an unfinished demo: no recorded result
    result = command("export", demo_folder, "--onnx")
    assert isinstance(result.exception, ClspError), result.output
    message = str(result.exception)
    assert "\n" not in message and "no trained encoder in" in message
    assert (
        f"pick one with --run PATH ({demo_folder / 'seed0' / 'clsp-simclr'}, {demo_folder / 'seed0' / 'simclr'})"
        in (message)
    )
    assert "pass --models denoiser" in message and not (demo_folder / "export").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--onnx", "--run", "nowhere"), "--run nowhere: no trained encoder in nowhere/ssl"),
        (("--onnx", "--models", "unet"), "--models 'unet': use denoiser or encoder"),
        (("--set", "export.formats=[]"), "export.formats is empty: pass --onnx"),
    ],
)
def test_asking_for_what_builds_nothing_is_an_error(demo_folder: Path, command, args, needle: str) -> None:
    result = command("export", demo_folder, *args)
    assert isinstance(result.exception, ClspError), result.output
    assert needle in str(result.exception) and "\n" not in str(result.exception)
    assert not (demo_folder / "export").exists()
