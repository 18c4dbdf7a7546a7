from pathlib import Path

import pytest
from typer.testing import CliRunner

from clsp.diffusion.commands import diffusion_app
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
