"""The ``clsp`` command: thin wrappers that parse, load the config, call the library and print a summary."""

import sys
from typing import Annotated

import typer

from clsp.cli_args import (
    DEFAULT_CONFIG,
    ConfigArgument,
    DefaultConfigArgument,
    SetOption,
    close_process_group,
    parse_name_list,
    parse_number_list,
)
from clsp.config import DEMO_METHODS, load_config, save_resolved_config
from clsp.contrastive.commands import train_command
from clsp.diffusion.commands import diffusion_app
from clsp.errors import WRITE_ERRNOS, ClspError, os_error_line
from clsp.evaluation.commands import compare_command, eval_command, transfer_command
from clsp.export.commands import export_command, features_command
from clsp.interrupt import Interrupted, exit_code
from clsp.positives.commands import positives_app
from clsp.progress import print_error, print_summary, status_console

app = typer.Typer(
    help="Contrastive Learning with Synthetic Positives (Zeng et al., ECCV 2024). "
    "Stages: data -> diffusion -> positives -> train -> eval -> export. Every stage reads one YAML config "
    "(see configs/) whose fields can be overridden with --set section.key=value.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(diffusion_app, name="diffusion")
app.add_typer(positives_app, name="positives")
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("compare")(compare_command)
app.command("transfer")(transfer_command)
app.command("export")(export_command)
app.command("features")(features_command)


@app.command()
def demo(
    config: DefaultConfigArgument = DEFAULT_CONFIG,
    overrides: SetOption = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny budget (about a minute): a smoke test, its numbers mean nothing.")
    ] = False,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Comma-separated SSL seeds (mean ± std over them); default 3 seeds from run.seed (--quick: 1).",
        ),
    ] = None,
    train_diffusion: Annotated[
        bool,
        typer.Option(
            "--train-diffusion",
            help="Train the DDPM from scratch with the config's recipe instead of using diffusion.pretrained "
            "(digits: the shipped UNet, which took far longer to train than the demo budget allows; docs/results.md says how long).",
        ),
    ] = False,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help=f"Comma-separated rows to train and compare (default: the config's demo.methods), from: "
            f"{', '.join(DEMO_METHODS)}. clsp-X is X with the CLSP term on synthetic positives, X-real3 the paper's "
            "control (same λ on a third real view).",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Redo the stages whose settings changed since they ran in this folder (others are kept).",
        ),
    ] = False,
) -> None:
    """Run every stage (DDPM, positives and their quality; the demo.methods rows, e.g. the baseline, CLSP and the
    real-third-view control, trained with the same budget for each seed; full-label and label-efficient
    evaluation) and print side-by-side tables, paired differences with 95% confidence intervals over seeds and a
    verdict computed from them. Digits and Fashion-MNIST sample with shipped trained UNets (diffusion.pretrained).
    Rerunning skips finished stages."""
    from clsp.demo import demo as run

    rows = None if methods is None else parse_name_list(methods, "--methods")  # demo.methods checks them
    seed_list = None if seeds is None else parse_number_list(seeds, "--seeds", int, "0,1,2", 0, 2**31 - 1)
    run(config, overrides or [], quick, seed_list, train_diffusion, rows, overwrite)


@app.command()
def info() -> None:
    """Show versions, devices and which optional export backends (ONNX Runtime, TensorRT) can be imported."""
    from clsp.environment import environment_report

    print_summary("clsp environment", environment_report())


@data_app.command("show")
def data_show(
    config: ConfigArgument,
    overrides: SetOption = None,
    split: Annotated[str | None, typer.Option(help="Split to show; default: data.train_split.")] = None,
    num_images: Annotated[int, typer.Option("--images", min=1, help="Images in the PNG grid.")] = 64,
    download: Annotated[bool, typer.Option("--download", help="Let torchvision download CIFAR/STL-10.")] = False,
    skip_bad_images: Annotated[
        bool, typer.Option("--skip-bad-images", help="folder source: skip unreadable files with a warning.")
    ] = False,
) -> None:
    """Load a dataset split, print a summary and write a PNG grid of samples to <output_dir>/data/."""
    flags = [f"data.download={download}"] * download + [f"data.skip_bad_images={skip_bad_images}"] * skip_bad_images
    cfg = load_config(config, [*(overrides or []), *flags])
    from clsp.data import load_images  # torch and torchvision load slowly: only once the config is valid
    from clsp.grid import save_image_grid

    split = split or cfg.data.train_split
    images = load_images(cfg.data, split)
    out_dir = cfg.run.output_dir / "data"
    save_resolved_config(cfg, out_dir)
    grid = save_image_grid(images.images[:num_images], out_dir / f"{split}_samples.png")
    print_summary(f"{cfg.data.source} / {split}", {**images.summary(), "sample grid": grid})


def main() -> None:
    """Entry point: user errors print one line and exit with status 2, never a traceback."""
    try:
        app()
    except ClspError as e:
        print_error(str(e))
        sys.exit(2)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        print_error(os_error_line(e))
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted) as e:
        status_console.print("interrupted")
        sys.exit(exit_code(e))
    finally:
        close_process_group()


if __name__ == "__main__":
    main()
