"""``clsp positives generate | show | score | sweep | verify | import``: parse, load, call the library, summarise."""

from pathlib import Path
from typing import Annotated

import typer

from clsp.cli_args import DEFAULT_CONFIG, ConfigArgument, DefaultConfigArgument, SetOption, parse_number_list
from clsp.config import load_config, save_resolved_config
from clsp.errors import ClspError
from clsp.progress import console, print_summary, print_table

positives_app = typer.Typer(
    help="Generate, inspect and check the synthetic positives (method.md 2.4).", no_args_is_help=True
)
StoreArgument = Annotated[
    Path, typer.Argument(help="A positive store folder (holds manifest.json).", show_default=False)
]
QUALITY_HELP = (
    "Class kept: share of candidates that a logistic regression on real labelled pixels assigns to the anchor's "
    "label (its real test accuracy beside it). Off-manifold: share farther from every real training image than 99% "
    "of real held-out images are (nearest-neighbour pixel distance; real test images' rate beside it). Hardness: RMS "
    "pixel distance anchor-candidate beside two augmented views of one image and random pairs."
)


@positives_app.command("generate")
def generate(
    config: ConfigArgument,
    overrides: SetOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N training images (a quick subset).")
    ] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Denoiser backend (positives.backend).")] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (a CUDA GPU when usable, else the CPU), cpu, cuda or cuda:N.")
    ] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish (or reuse) the store already there; its finished shards are kept.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete the store already there and start over.")
    ] = False,
) -> None:
    """Generate k positives per training image into <output_dir>/positives (or ssl.positives).

    Needs a trained UNet (clsp diffusion train). An interrupted run keeps its finished shards: --resume finishes it.
    Several processes: torchrun --nproc_per_node N -m clsp.cli positives generate CONFIG
    (or accelerate launch -m clsp.cli positives generate CONFIG).
    """
    cfg = load_config(config, [*(overrides or []), *([f"positives.backend={backend}"] if backend else [])])
    from clsp.positives.generate import generate_positives
    from clsp.runtime.load import load_denoiser

    result = generate_positives(cfg, limit, device, load_denoiser, resume, overwrite)
    if result.num_processes == 1 or _is_main_process():
        print_summary("positives generate", result.summary())


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


@positives_app.command("show")
def show(
    store: StoreArgument,
    num_rows: Annotated[int, typer.Option("--anchors", min=1, help="Anchors (rows) in the grid.")] = 8,
) -> None:
    """Write STORE/show.png (anchors beside their k candidates) and print the store's quality figures."""
    from clsp.positives.inspect import show_positives, store_dataset, store_quality
    from clsp.positives.quality import quality_rows
    from clsp.positives.store import PositiveStore

    opened = PositiveStore.open(store)
    grid = show_positives(opened, store_dataset(opened)[1], num_rows, store / "show.png")
    rows = {
        "grid": grid,
        "layout": f"{min(num_rows, opened.n)} rows: anchor, then its {opened.num_candidates} candidates",
    }
    print_summary(f"positives {store}", {**rows, **quality_rows(store_quality(opened))})


@positives_app.command(
    "score",
    short_help="Score a store: class kept, off-manifold, hardness against augmentations (quality.json).",
    help=f"Score the positive store of CONFIG (ssl.positives or <output_dir>/positives). {QUALITY_HELP} With a trained SSL run in <output_dir>/ssl, the same distances in its features. Writes <store>/quality.json.",
)
def score(
    config: DefaultConfigArgument = DEFAULT_CONFIG,
    overrides: SetOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Score the first N anchors (default: up to 2,000).")
    ] = None,
) -> None:
    cfg = load_config(config, overrides or [])
    from clsp.positives.inspect import store_dataset, store_quality
    from clsp.positives.quality import quality_rows
    from clsp.positives.store import PositiveStore

    root = cfg.positives_store
    store = PositiveStore.open(root, check="size")
    scores = store_quality(store, cfg, limit)
    rows = {"store": root, "dataset": scores["dataset"], **quality_rows(scores)}
    ssl_dir = cfg.layout.ssl
    if (ssl_dir / "backbone.safetensors").is_file():
        from clsp.contrastive.backbones import load_backbone
        from clsp.evaluation.evaluate import store_feature_hardness

        encoder, spec = load_backbone(ssl_dir)
        f = store_feature_hardness(store, store_dataset(store, cfg)[1], encoder, spec, cfg, scores["num_anchors"])
        rows[f"features of {ssl_dir}: 2-2cos anchor-candidate / two views / random pairs"] = (
            f"{f['synthetic']:.3f} / {f['two_views']:.3f} / {f['random_pairs']:.3f}"
        )
    else:
        rows["encoder features"] = f"no SSL run in {ssl_dir} (train one for feature distances)"
    rows["scores"] = root / "quality.json"
    print_summary("positive quality", rows)


@positives_app.command(
    "sweep",
    short_help="Positive quality against w (and num_layers) on a few anchors: sweep.png, sweep.json.",
    help=f"Generate positives for the first --limit anchors at every w (and every --layers) into temporary stores, score them and draw the trade-off: <output_dir>/sweep/sweep.png (class kept, off-manifold, hardness against w), sweep.json and sweep_grid.png (anchors, then candidate 0 at each w). Other sampler settings come from positives.*. {QUALITY_HELP}",
)
def sweep(
    config: DefaultConfigArgument = DEFAULT_CONFIG,
    overrides: SetOption = None,
    weights: Annotated[str, typer.Option("--weights", help="Comma-separated w in [0,1].")] = "0,0.1,0.3,0.5,1",
    layers: Annotated[str, typer.Option("--layers", help="Comma-separated num_layers (1 = bottleneck only).")] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, help="Anchors per point.")] = 256,
) -> None:
    parsed_weights = parse_number_list(weights, "--weights", float, "0,0.1,0.5,1", 0, 1)
    cfg = load_config(config, overrides or [])
    parsed_layers = parse_number_list(layers, "--layers", int, "1,3", 1, 64) if layers else [cfg.positives.num_layers]
    from clsp.positives.sweep import sweep_positives

    result = sweep_positives(cfg, parsed_weights, parsed_layers, limit)
    rows = []
    for point in result["points"]:
        labelled = not isinstance(point["classifier"], str)
        rows.append(
            [
                f"{point['weight']:g}",
                str(point["num_layers"]),
                f"{100 * point['class_kept']:.1f}" if labelled else point["class_kept"],
                f"{100 * point['off_manifold']:.1f}",
                f"{point['pixel_distance']['anchor_candidate']:.3f}",
            ]
        )
    headers = ["w", "layers", "class kept %", "off-manifold %", "pixel RMS to anchor"]
    print_table(f"w sweep, {limit} anchors x {cfg.positives.num_candidates} candidates per point", headers, rows)
    first = result["points"][0]
    d = first["pixel_distance"]
    print_summary(
        "for scale",
        {
            "reference classifier on real test images": "needs labels"
            if isinstance(first["classifier"], str)
            else f"{100 * first['classifier']['test_accuracy']:.1f}% accurate",
            "off-manifold rate of real test images": f"{100 * first['realism']['real_test_off_manifold']:.1f}%",
            "pixel RMS two augmented views / random pairs": f"{d['two_views']:.3f} / {d['random_pairs']:.3f}",
            "figure": result["files"]["figure"],
            "grid": result["files"]["grid"],
        },
    )


@positives_app.command("verify")
def verify(store: StoreArgument) -> None:
    """Check every shard against the manifest (presence, size, shape, SHA-256) and report them with the backend and
    precision that made the positives; exit 2 on problems."""
    from clsp.positives.store import PositiveStore

    opened = PositiveStore.open(store, check="none")
    problems = opened.verify(full=True)
    for problem in problems:
        console.print(f"shard {problem.shard}: {problem.problem}", markup=False, highlight=False)
    print_summary(
        f"verify {store}",
        {
            "images x candidates": f"{opened.n} x {opened.num_candidates}, {opened.image_shape} uint8",
            "shards finished": f"{len(opened.finished_shards())} of {opened.num_shards}",
            "denoiser backend": opened.provenance.get("backend", "not recorded"),
            "precision": opened.provenance.get("sampler", {}).get("precision", "not recorded"),
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
    from clsp.positives.generate import anchor_images
    from clsp.positives.store import PositiveStore

    dataset, _ = anchor_images(cfg, None)
    root = cfg.positives_store
    store = PositiveStore.import_array(
        array,
        root,
        dataset_size=len(dataset),
        channels=dataset.image_shape[2],
        dataset_fingerprint=dataset.fingerprint,
        provenance={"dataset": dataset.name},
        shard_size=cfg.positives.shard_size,
    )
    save_resolved_config(cfg, root)
    print_summary("positives import", {"store": root, "images x candidates": f"{store.n} x {store.num_candidates}"})
