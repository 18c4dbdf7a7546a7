"""PNG plots for the report: a 2-D embedding of test features and the training curves."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from clsp.atomic import atomic_write


def _save(figure: plt.Figure, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(figure)


def embedding_plot(
    features: np.ndarray, labels: np.ndarray, path: Path, method: str = "pca", title: str = "", seed: int = 0
) -> Path:
    """Scatter of float ``[N, D]`` features reduced to 2-D (``pca`` or ``tsne``), one colour per label."""
    features = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)
    if method == "tsne":
        points = TSNE(2, init="pca", perplexity=min(30.0, (len(features) - 1) / 3), random_state=seed).fit_transform(
            features
        )
    else:
        points = PCA(2, random_state=seed).fit_transform(features)
    figure, axis = plt.subplots(figsize=(6, 6))
    scatter = axis.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10" if labels.max() < 10 else "tab20", s=6)
    axis.legend(*scatter.legend_elements(num=min(int(labels.max()) + 1, 20)), loc="best", fontsize=7, markerscale=0.8)
    axis.set_title(title or f"test features, {method.upper()}")
    axis.set_xticks([])
    axis.set_yticks([])
    return _save(figure, path)


def read_metrics(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file (one JSON object per line)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


NOT_PLOTTED = frozenset({"step", "images_per_s"})
"""Bookkeeping columns of ``metrics.jsonl``: not curves anyone reads."""


def training_curves(runs: dict[str, list[dict]], path: Path, x_key: str = "epoch") -> Path:
    """One panel per numeric metric of the runs (name -> metrics rows), each run a line over ``x_key``."""
    keys = sorted(
        {k for rows in runs.values() for row in rows for k, v in row.items() if isinstance(v, int | float)}
        - {x_key, *NOT_PLOTTED}
    )
    cols = min(3, len(keys)) or 1
    grid_rows = -(-len(keys) // cols) or 1
    figure, axes = plt.subplots(grid_rows, cols, figsize=(4 * cols, 3 * grid_rows), squeeze=False)
    for axis, key in zip(axes.flat, keys, strict=False):
        for name, rows in runs.items():
            points = [(row[x_key], row[key]) for row in rows if key in row and x_key in row]
            if points:
                axis.plot(*zip(*points, strict=True), label=name)
        axis.set_title(key, fontsize=9)
        axis.set_xlabel(x_key, fontsize=8)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    figure.tight_layout()
    return _save(figure, path)
