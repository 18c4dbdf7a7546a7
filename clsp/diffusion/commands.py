"""``clsp diffusion train`` and ``clsp diffusion preview``: parse, load the config, call the library, summarise."""

from typing import Annotated

import typer

from clsp.cli_args import ConfigArgument, SetOption, parse_number_list
from clsp.config import load_config
from clsp.progress import print_summary

diffusion_app = typer.Typer(
    help="Train the DDPM (method.md 1) and look at its anchor-interpolated samples (method.md 2).",
    no_args_is_help=True,
)


@diffusion_app.command("train")
def train(
    config: ConfigArgument,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <output_dir>/diffusion/state.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier run's UNet and state.")] = False,
) -> None:
    """Train the DDPM; writes <output_dir>/unet (EMA weights) and diffusion/{state,samples.png,config.yaml}.

    Multi-GPU: accelerate launch clsp/diffusion/train.py --config CONFIG [--set k=v] [--resume].
    """
    from clsp.diffusion.train import run_training  # torch loads slowly: only once the command parsed

    run_training(config, overrides or [], resume, overwrite)


@diffusion_app.command("preview")
def preview(
    config: ConfigArgument,
    overrides: SetOption = None,
    anchors: Annotated[int, typer.Option("--anchors", min=1, help="Rows: anchors from the training split.")] = 8,
    weights: Annotated[str, typer.Option("--weights", help="Columns: comma-separated w in [0,1].")] = "0,0.1,0.5,1",
) -> None:
    """Write <output_dir>/diffusion/preview.png: anchors in the first column, one column of positives per w."""
    parsed = parse_number_list(weights, "--weights", float, "0,0.1,0.5,1", 0, 1)
    cfg = load_config(config, overrides or [])
    from clsp.accelerator import pick_device
    from clsp.diffusion.preview import preview_positives
    from clsp.diffusion.sampler import SamplerSettings

    path = preview_positives(cfg, anchors, parsed)
    p, precision = cfg.positives, SamplerSettings.from_config(cfg, pick_device()).precision
    print_summary(
        "diffusion preview",
        {
            "grid": path,
            "anchors x weights": f"{anchors} x {parsed}",
            "sampler": f"{p.solver}, {p.num_steps} steps, eta {p.eta}, {p.num_layers} layer(s), {precision}",
        },
    )
