"""``clsp eval CONFIG`` and ``clsp compare RUN...``: evaluate a trained run; tabulate several."""

from pathlib import Path
from typing import Annotated

import typer

from clsp.cli_args import ConfigArgument, SetOption


def eval_command(
    config: ConfigArgument,
    overrides: SetOption = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (a CUDA GPU when usable, else the CPU), cpu, cuda or cuda:N.")
    ] = "auto",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Keep the evaluation already there when it is of this encoder with these settings."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the evaluation already there.")] = False,
) -> None:
    """Evaluate the backbone in <output_dir>/ssl: final-epoch linear probe, weighted kNN (best k and the config's
    fixed k), the CLSP alignment term on the stored positives, and plots. Writes <output_dir>/eval/: metrics.json,
    report.md, embedding.png, curves.png and positives.png."""
    from clsp.config import load_config

    cfg = load_config(config, overrides or [])
    from clsp.evaluation.evaluate import evaluate_run  # torch loads slowly: only once the config is valid
    from clsp.progress import print_summary

    result = evaluate_run(cfg, device, resume, overwrite)
    print_summary(f"evaluation: {result.metrics['method_label']}", result.summary())


def compare_command(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders (their eval/metrics.json) or metrics.json files.", show_default=False),
    ],
    by_method: Annotated[
        bool, typer.Option("--by-method", help="One row per method: mean ± std over its runs (e.g. seeds).")
    ] = False,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the table to this .md file.")] = None,
) -> None:
    """One table from several evaluated runs: linear top-1/top-5, kNN (fixed and best k) and the alignment term."""
    from clsp.atomic import atomic_write_text
    from clsp.evaluation.evaluate import read_run_metrics
    from clsp.evaluation.report import comparison_rows, markdown_table
    from clsp.progress import print_table

    headers, rows = comparison_rows([read_run_metrics(run) for run in runs], group=by_method)
    print_table("comparison (accuracies in %)", headers, rows)
    if markdown is not None:
        atomic_write_text(markdown, markdown_table(headers, rows))


def transfer_command(
    config: ConfigArgument,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="A dataset to transfer to (repeatable): a source name (fashion_mnist, digits) or key=value pairs, "
            "e.g. source=torchvision,dataset=DTD,root=/data/dtd or source=folder,root=/data/pets,max_train=5000 "
            "(name=, metric=top1|mean_per_class, max_train= belong to the target, the rest to its data). "
            "Default: the config's eval.transfer.",
            show_default=False,
        ),
    ] = None,
    run: Annotated[
        Path | None, typer.Option("--run", help="The run folder (default: the config's run.output_dir).")
    ] = None,
    overrides: SetOption = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (a CUDA GPU when usable, else the CPU), cpu, cuda or cuda:N.")
    ] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep the targets this encoder was measured on with these settings.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Measure the targets again.")] = False,
) -> None:
    """Transfer a trained, evaluated run's frozen encoder to other datasets by the standard linear protocol
    (Kornblith et al. 2019, as Ericsson et al. 2021 run it): features without augmentation, a multinomial logistic
    regression (L-BFGS) whose C = 1/wd is chosen over wd in logspace(-6, 5, 45) on the official validation split or
    a random 20 % of train, refitted on train + validation and scored on test; beside it weighted kNN (k 20).
    Features are cached in <run>/transfer/<target>/; results join <run>/eval/metrics.json and report.md
    (docs/transfer.md)."""
    from clsp.config import load_config

    cfg = load_config(config, overrides or [])
    from clsp.evaluation.report import transfer_table
    from clsp.evaluation.transfer import parse_target, transfer_run
    from clsp.progress import print_table

    chosen = tuple(parse_target(spec) for spec in targets) if targets else cfg.eval.transfer
    results = transfer_run(cfg, chosen, run, device, resume, overwrite)
    headers, rows = transfer_table(results)
    print_table("transfer (accuracies in %)", headers, rows)
