import statistics
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from clsp.config import load_config
from clsp.diffusion.commands import diffusion_app
from clsp.diffusion.train import train_diffusion
from clsp.errors import ClspError

runner = CliRunner()
DIGITS = str(Path(__file__).parents[2] / "configs" / "digits.yaml")
TINY = ["--set", "diffusion.unet=tiny", "--set", "diffusion.batch_size=256", "--set", "diffusion.epochs=1"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    sets = [*TINY, "--set", f"run.output_dir={out}", "--set", "positives.num_steps=10"]
    result = runner.invoke(diffusion_app, ["train", DIGITS, *sets, "--set", "diffusion.num_samples=4"])
    assert result.exit_code == 0, result.output
    assert "DDPM training" in result.output
    return out, sets


def test_train_writes_the_run_layout(trained_run):
    out, _ = trained_run
    for path in ("unet/config.json", "diffusion/state", "diffusion/samples.png", "diffusion/config.yaml"):
        assert (out / path).exists(), path


def test_train_resume_with_more_epochs_continues_the_run(tmp_path):
    small = ["diffusion.num_samples=0", "data.test_fraction=0.9", "diffusion.batch_size=64"]
    sets = [*TINY, *(a for o in small for a in ("--set", o))]

    def train(out, *args):
        result = runner.invoke(diffusion_app, ["train", DIGITS, *sets, "--set", f"run.output_dir={out}", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "2 / 2" in train(tmp_path / "cut")  # 180 training images at batch 64: 2 steps per epoch
    resumed = train(tmp_path / "cut", "--set", "diffusion.epochs=2", "--resume")
    whole_config = load_config(DIGITS, [*sets[1::2], f"run.output_dir={tmp_path / 'whole'}", "diffusion.epochs=2"])
    whole = train_diffusion(whole_config)
    resumed_mean, restarted_mean = (f"{statistics.fmean(whole.losses[i:]):.4f}" for i in (2, 0))
    assert "4 / 4" in resumed and resumed_mean in resumed and restarted_mean not in resumed  # ran steps 3-4 only
    weights = [
        load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
        for out in (tmp_path / "cut", whole.unet_dir.parent)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[1]) < 1e-6


def test_preview_grid(trained_run):
    out, sets = trained_run
    result = runner.invoke(diffusion_app, ["preview", DIGITS, *sets, "--anchors", "3", "--weights", "0,1"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    grid = Image.open(out / "diffusion" / "preview.png")
    tile = 64 + 2  # 16 px digits enlarged to 64, plus padding
    assert grid.size == (3 * tile + 2, 3 * tile + 2)  # 3 columns (anchor + 2 weights), 3 rows


@pytest.mark.parametrize("weights", ["0,1.5", "a,b", ""])
def test_preview_rejects_bad_weights(trained_run, weights):
    _, sets = trained_run
    result = runner.invoke(diffusion_app, ["preview", DIGITS, *sets, "--weights", weights])
    assert isinstance(result.exception, ClspError) and "--weights" in str(result.exception)


def test_preview_needs_a_trained_unet(tmp_path):
    sets = ["--set", f"run.output_dir={tmp_path}", "--set", "diffusion.pretrained=null"]
    result = runner.invoke(diffusion_app, ["preview", DIGITS, *sets])
    assert isinstance(result.exception, ClspError) and "clsp diffusion train" in str(result.exception)
