"""The w trade-off as a figure: positives for a few anchors at several blend weights (and blended layer counts),
scored for class kept, realism and hardness, drawn against w. The figure a user needs to choose w for a dataset."""

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from clsp.atomic import atomic_write, atomic_write_text
from clsp.config import Config
from clsp.errors import ClspError
from clsp.grid import save_image_grid
from clsp.positives.store import PositiveStore

GRID_ANCHORS = 8
"""Rows of ``sweep.png``'s companion grid: anchors, then candidate 0 at every weight."""


@dataclass
class ScoredSetting:
    """Positives of one sampler setting for the first anchors, and their scores."""

    store: PositiveStore
    scores: dict[str, Any]
    seconds: float
    """Wall time of generating them (UNet load included)."""
    real: Any
    """The real reference they were scored against (reuse it for the next setting)."""


def score_setting(cfg: Config, root: Path, limit: int, real: Any = None, **positives: Any) -> ScoredSetting:
    """Generate the first ``limit`` anchors' positives with the ``positives.*`` fields ``positives`` changed into a
    store at ``root``, and score them (:func:`~clsp.positives.inspect.score_store`) against ``real``, the real
    reference (None: made here; pass one made once to score many settings against the same judges)."""
    from clsp.positives.generate import generate_positives
    from clsp.positives.inspect import real_reference, score_store

    run = cfg.model_copy(deep=True)
    for name, value in positives.items():
        setattr(run.positives, name, value)
    run.ssl.positives = root
    started = time.perf_counter()
    generate_positives(run, limit, resume=True)  # a sweep rerun reuses its finished points
    seconds = time.perf_counter() - started
    store = PositiveStore.open(root, check="none")
    real = real or real_reference(run, store.image_shape[0])
    return ScoredSetting(store, score_store(store, run, limit, real), seconds, real)


def sweep_positives(
    cfg: Config, weights: list[float], layers: list[int], limit: int, out: Path | None = None
) -> dict[str, Any]:
    """Generate ``limit`` anchors' positives per (w, num_layers) into temporary stores, score each, and write
    ``sweep.json``, ``sweep.png`` (class kept, off-manifold and hardness against w) and ``sweep_grid.png`` into
    ``out`` (default ``<run.output_dir>/sweep``). The other sampler settings come from ``cfg.positives``."""
    from clsp.positives.inspect import store_dataset

    if not weights or not layers:
        raise ClspError("sweep: give at least one weight and one num_layers")
    if limit < 1:
        raise ClspError(f"--limit must be at least 1, got {limit}")
    out = out or cfg.run.output_dir / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    points: list[dict[str, Any]] = []
    columns: list[np.ndarray] = []
    real = None  # one classifier and one set of real images serve every point
    with tempfile.TemporaryDirectory(dir=out, prefix=".stores-") as tmp:
        for num_layers in layers:
            for weight in weights:
                root = Path(tmp) / f"w{weight:g}-L{num_layers}"
                done = score_setting(cfg, root, limit, real, weight=weight, num_layers=num_layers)
                store, real = done.store, done.real
                points.append({"weight": weight, "num_layers": num_layers, **done.scores, "store": None})
                if num_layers == layers[0]:
                    columns.append(np.stack([store.candidate(i, 0) for i in range(min(GRID_ANCHORS, store.n))]))
        anchors = store_dataset(store, cfg)[1][: len(columns[0])]
    p = cfg.positives
    result = {
        "weights": weights,
        "layers": layers,
        "limit": limit,
        "sampler": {
            "solver": p.solver,
            "num_steps": p.num_steps,
            "eta": p.eta,
            "precision": store.provenance["sampler"]["precision"],
        },
        "num_candidates": p.num_candidates,
        "points": points,
    }
    atomic_write_text(out / "sweep.json", json.dumps(result, indent=1))
    grid = np.stack([anchors, *columns], axis=1).reshape(-1, *anchors.shape[1:])
    save_image_grid(grid, out / "sweep_grid.png", nrow=len(columns) + 1)
    result["files"] = {"figure": str(sweep_figure(result, out / "sweep.png")), "grid": str(out / "sweep_grid.png")}
    return result


def sweep_figure(result: dict[str, Any], path: Path) -> Path:
    """Three panels against w, one line per blended-layer count: class kept (solid: the pixel regression, dashed: the
    CNN judge; each judge's real test accuracy dotted), off-manifold (real held-out images' rate dotted) and anchor-candidate pixel distance (two augmented
    views and random pairs dotted)."""
    figure, (kept_axis, off_axis, hard_axis) = plt.subplots(1, 3, figsize=(13, 3.8))
    first = result["points"][0]
    labelled = not isinstance(first["classifier"], str)
    for num_layers in result["layers"]:
        pts = [pt for pt in result["points"] if pt["num_layers"] == num_layers]
        w = [pt["weight"] for pt in pts]
        label = f"{num_layers} blended layer{'s' * (num_layers > 1)}"
        if labelled:
            line = kept_axis.plot(w, [100 * pt["class_kept"] for pt in pts], "o-", label=label)[0]
            if "class_kept_cnn" in pts[0]:
                kept = [100 * pt["class_kept_cnn"] for pt in pts]
                kept_axis.plot(w, kept, "s--", color=line.get_color(), label=f"{label}, CNN judge")
        off_axis.plot(w, [100 * pt["off_manifold"] for pt in pts], "o-", label=label)
        hard_axis.plot(w, [pt["pixel_distance"]["anchor_candidate"] for pt in pts], "o-", label=label)
    off_axis.axhline(100 * first["realism"]["real_test_off_manifold"], color="grey", ls=":", label="real test images")
    if labelled:
        kept_axis.axhline(100 * first["classifier"]["test_accuracy"], color="grey", ls=":", label="real test accuracy")
        if "cnn_judge" in first:
            accuracy = 100 * first["cnn_judge"]["test_accuracy"]
            kept_axis.axhline(accuracy, color="black", ls=":", label="real test accuracy, CNN judge")
        kept_axis.set_ylim(0, 102)
    else:
        kept_axis.text(0.5, 0.5, "needs labels", ha="center", va="center", transform=kept_axis.transAxes)
    d = first["pixel_distance"]
    hard_axis.axhline(d["two_views"], color="tab:green", ls=":", label="two augmented views")
    hard_axis.axhline(d["random_pairs"], color="grey", ls=":", label="random pairs")
    for axis, title, unit in (
        (kept_axis, "class kept", "% of candidates"),
        (off_axis, "off-manifold", "% of candidates"),
        (hard_axis, "hardness: anchor-candidate distance", "RMS pixel distance"),
    ):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("w (weight of the random sample; 1 = unconditional)", fontsize=8)
        axis.set_ylabel(unit, fontsize=8)
        axis.legend(fontsize=7)
    n, k = first["num_anchors"], first["num_candidates"]
    figure.suptitle(f"positive quality against w ({n} anchors x {k} candidates per point)", fontsize=10)
    figure.tight_layout()
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(figure)
