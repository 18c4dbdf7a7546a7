"""``clsp train CONFIG``: parse, load the config, call :func:`clsp.contrastive.train.train_ssl`, summarise."""

from pathlib import Path
from typing import Annotated

import typer

from clsp.cli_args import ConfigArgument, SetOption


def train_command(
    config: ConfigArgument,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <output_dir>/ssl/state.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run's backbone, metrics and state.")
    ] = False,
    positives: Annotated[
        Path | None, typer.Option("--positives", help="Positive store folder (default: ssl.positives).")
    ] = None,
) -> None:
    """Self-supervised training (SimCLR / MoCo v2+ / NNCLR with the CLSP term); writes <output_dir>/ssl/.

    Without --resume or --overwrite an earlier run in the same folder is never replaced; Ctrl-C saves the state
    and exits 130. Multi-GPU or multi-node: accelerate launch clsp/train.py --config CONFIG [--set k=v] [--resume].
    """
    from clsp.contrastive.train import run_training  # torch loads slowly: only once the command parsed

    extra = [f"ssl.positives={positives}"] if positives else []
    run_training(config, [*(overrides or []), *extra], resume, overwrite=overwrite)
