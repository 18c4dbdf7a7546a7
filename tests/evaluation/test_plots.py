import json
from pathlib import Path

import numpy as np
from PIL import Image

from clsp.evaluation.plots import embedding_plot, read_metrics, training_curves


def colourful_pixels(path: Path) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((pixels.max(-1) - pixels.min(-1)) > 60).sum())


def test_embedding_plot_draws_coloured_clusters(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = np.eye(3, 8)[labels] * 5 + rng.normal(size=(300, 8)) * 0.1
    for method in ("pca", "tsne"):
        path = embedding_plot(features, labels, tmp_path / f"{method}.png", method=method)
        assert colourful_pixels(path) > 500


def test_training_curves_from_jsonl(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps({"epoch": e, "loss": 5 - e, "lr": 0.1, "method": "simclr"}) for e in range(5)))
    rows = read_metrics(log)
    assert rows[2] == {"epoch": 2, "loss": 3, "lr": 0.1, "method": "simclr"}
    path = training_curves({"a": rows, "b": rows[:3]}, tmp_path / "curves.png")
    width, height = Image.open(path).size
    assert width > 2 * height * 0.9 and colourful_pixels(path) > 100  # two panels (loss, lr) side by side
