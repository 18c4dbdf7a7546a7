"""``clsp positives generate | show | verify | import``: parse, load, call the library, summarise."""

from pathlib import Path
from typing import Annotated

import typer

from clsp.cli_args import ConfigArgument, SetOption
from clsp.config import load_config, save_resolved_config
from clsp.errors import ClspError
from clsp.progress import console, print_summary

positives_app = typer.Typer(
    help="Generate, inspect and check the synthetic positives (method.md 2.4).", no_args_is_help=True
)
StoreArgument = Annotated[
    Path, typer.Argument(help="A positive store folder (holds manifest.json).", show_default=False)
]


@positives_app.command("generate")
def generate(
    config: ConfigArgument,
    overrides: SetOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N training images (a quick subset).")
    ] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Denoiser backend (positives.backend).")] = None,
) -> None:
    """Generate k positives per training image into <output_dir>/positives (or ssl.positives).

    Needs a trained UNet (clsp diffusion train). Finished shards are kept: rerun the same command to resume.
    Several processes: torchrun --nproc_per_node N -m clsp.cli positives generate CONFIG
    (or accelerate launch -m clsp.cli positives generate CONFIG).
    """
    cfg = load_config(config, [*(overrides or []), *([f"positives.backend={backend}"] if backend else [])])
    from clsp.positives.generate import generate_positives

    result = generate_positives(cfg, limit)
    if result.num_processes == 1 or _is_main_process():
        print_summary("positives generate", result.summary())


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


@positives_app.command("show")
def show(
    store: StoreArgument,
    num_rows: Annotated[int, typer.Option("--n", min=1, help="Anchors (rows) in the grid.")] = 8,
) -> None:
    """Write STORE/show.png (anchors beside their k candidates) and print the anchor-candidate pixel cosine."""
    from clsp.positives.inspect import show_positives, store_anchors
    from clsp.positives.store import PositiveStore

    opened = PositiveStore.open(store)
    rows = show_positives(opened, store_anchors(opened), num_rows, store / "show.png")
    print_summary(f"positives {store}", rows)


@positives_app.command("verify")
def verify(store: StoreArgument) -> None:
    """Check every shard against the manifest (presence, size, shape, SHA-256) and report; exit 2 on problems."""
    from clsp.positives.store import PositiveStore

    opened = PositiveStore.open(store, check="none")
    problems = opened.verify(full=True)
    for problem in problems:
        console.print(f"shard {problem.shard}: {problem.problem}")
    print_summary(
        f"verify {store}",
        {
            "images x candidates": f"{opened.n} x {opened.num_candidates}, {opened.image_shape} uint8",
            "shards finished": f"{len(opened.finished_shards())} of {opened.num_shards}",
            "problems": len(problems),
        },
    )
    if problems:
        raise ClspError(f"{store}: {len(problems)} damaged shard(s); delete them from the store and generate again")


@positives_app.command("import")
def import_array(
    array: Annotated[Path, typer.Argument(help="Reference-layout .npy: uint8 [N, k, H, W, C].", show_default=False)],
    config: ConfigArgument,
    overrides: SetOption = None,
) -> None:
    """Import one [N, k, H, W, C] .npy of positives (the reference code's layout) as a store for CONFIG's data."""
    cfg = load_config(config, overrides or [])
    from clsp.positives.generate import anchor_images, store_path
    from clsp.positives.store import PositiveStore

    dataset, _ = anchor_images(cfg, None)
    root = store_path(cfg)
    store = PositiveStore.import_array(
        array,
        root,
        dataset_size=len(dataset),
        dataset_fingerprint=dataset.fingerprint,
        provenance={"dataset": dataset.name},
        shard_size=cfg.positives.shard_size,
    )
    save_resolved_config(cfg, root)
    print_summary("positives import", {"store": root, "images x candidates": f"{store.n} x {store.num_candidates}"})
