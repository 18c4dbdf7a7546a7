"""A tiny trained-looking run (tiny UNet, small CNN encoder, 16x16x1 digits) and its ONNX + TorchScript export."""

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner, Result

from clsp.config import Config, load_config
from clsp.contrastive.backbones import build_backbone, save_backbone
from clsp.diffusion.unet import build_unet

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "diffusion.pretrained=null",  # the run's own tiny UNet, never the shipped one
    "positives.num_layers=1",
    "positives.solver=ddim",  # the reference client steps DDIM only
    "positives.num_steps=10",
    "positives.precision=fp32",
    "positives.num_candidates=2",
    "positives.batch_size=6",
    "positives.shard_size=4",
    "export.max_batch=64",
]


def make_run(root: Path) -> Path:
    """``root/unet`` (tiny preset, random init) and ``root/ssl`` (small CNN with non-trivial BatchNorm statistics)."""
    torch.manual_seed(0)
    build_unet("tiny", 16, 1).save_pretrained(root / "unet")
    encoder, dim = build_backbone("small-cnn", in_channels=1)
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    spec = {"backbone": "small-cnn", "stem": "cifar", "in_channels": 1, "feature_dim": dim, "image_size": 16}
    save_backbone(encoder, root / "ssl", {**spec, "mean": [0.25], "std": [0.35]})
    return root


def run_config(root: Path, *overrides: str) -> Config:
    """The digits config pointed at ``root``, with :data:`FAST` and ``overrides``."""
    return load_config(REPO_ROOT / "configs" / "digits.yaml", [f"run.output_dir={root}", *FAST, *overrides])


def run_command(command: str, root: Path, *args: object) -> Result:
    """``clsp COMMAND CONFIG ARGS`` through the CLI's Typer app, with the digits config and ``root``'s
    :func:`run_config` settings as ``--set`` options: ``run_command("positives generate", root, "--limit", 8)``."""
    from clsp.cli import app

    sets = [a for o in (f"run.output_dir={root}", *FAST) for a in ("--set", o)]
    argv = [*command.split(), str(REPO_ROOT / "configs" / "digits.yaml"), *sets, *(str(a) for a in args)]
    return CliRunner().invoke(app, argv, env={"COLUMNS": "240"})


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run exported to ONNX and TorchScript (read-only: copy it with ``run_copy`` to change it)."""
    from clsp.export.build import export_run

    root = make_run(tmp_path_factory.mktemp("exported") / "run")
    export_run(run_config(root), ("onnx", "torchscript"))
    return root


@pytest.fixture
def run_copy(exported_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported_run, tmp_path / "run"))


@pytest.fixture
def config_of():
    """``config_of(root, *overrides)``: :func:`run_config`."""
    return run_config


@pytest.fixture
def command():
    """``command(name, root, *args)``: :func:`run_command`."""
    return run_command


@pytest.fixture
def fresh_run(tmp_path: Path) -> Path:
    """A run with models and no export."""
    return make_run(tmp_path / "fresh")
