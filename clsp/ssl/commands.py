"""``clsp train CONFIG``: parse, load the config, call :func:`clsp.ssl.train.train_ssl`, summarise."""

from pathlib import Path
from typing import Annotated

import typer

from clsp.cli_args import ConfigArgument, SetOption


def train_command(
    config: ConfigArgument,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <output_dir>/ssl/state.")] = False,
    positives: Annotated[
        Path | None, typer.Option("--positives", help="Positive store folder (default: ssl.positives).")
    ] = None,
) -> None:
    """Self-supervised training (SimCLR / MoCo v2+ / NNCLR with the CLSP term); writes <output_dir>/ssl/.

    Multi-GPU or multi-node: accelerate launch clsp/train.py --config CONFIG [--set k=v] [--resume].
    """
    from clsp.ssl.train import run_training  # torch loads slowly: only once the command parsed

    extra = [f"ssl.positives={positives}"] if positives else []
    run_training(config, [*(overrides or []), *extra], resume)
