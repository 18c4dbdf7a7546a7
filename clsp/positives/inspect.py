"""Look at a positive store: a grid of anchors beside their candidates, and how far the candidates stray."""

from pathlib import Path

import numpy as np

from clsp.config import RESOLVED_CONFIG_NAME, load_config
from clsp.errors import ClspError
from clsp.grid import save_image_grid
from clsp.positives.store import PositiveStore


def store_anchors(store: PositiveStore) -> np.ndarray:
    """The anchors a store was made from, uint8 ``[N, H, W, C]``, reloaded through the config saved beside it
    and checked against the store's dataset fingerprint."""
    from clsp.positives.generate import anchor_images

    config_path = store.root / RESOLVED_CONFIG_NAME
    if not config_path.is_file():
        raise ClspError(f"{store.root}: no {RESOLVED_CONFIG_NAME} beside the store, so its anchors are unknown")
    dataset, anchors = anchor_images(load_config(config_path), store.n)
    store.check_matches(len(dataset), dataset.fingerprint, dataset.name)
    return anchors


def pixel_cosine(anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine similarity in pixel space between each anchor ``[n, H, W, C]`` and its candidates ``[n, k, H, W, C]``
    (uint8, compared after mapping to [-1, 1]); returns float ``[n, k]``."""
    a = anchors.reshape(len(anchors), 1, -1).astype(np.float64) / 127.5 - 1
    c = candidates.reshape(*candidates.shape[:2], -1).astype(np.float64) / 127.5 - 1
    return (a * c).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(c, axis=-1) + 1e-12)


def show_positives(
    store: PositiveStore, anchors: np.ndarray, num_rows: int, path: Path, stats_rows: int = 1000
) -> dict:
    """Write a PNG grid (one row per anchor: the anchor, then its k candidates) and return summary rows
    with the anchor-candidate pixel cosine over the first ``stats_rows`` images."""
    num_rows = min(num_rows, store.n)
    rows = np.concatenate([np.concatenate([anchors[i : i + 1], store[i]]) for i in range(num_rows)])
    grid = save_image_grid(rows, path, nrow=store.num_candidates + 1)
    count = min(stats_rows, store.n)
    cosine = pixel_cosine(anchors[:count], np.stack([store[i] for i in range(count)]))
    return {
        "grid": grid,
        "layout": f"{num_rows} rows: anchor, then its {store.num_candidates} candidates",
        "pixel cosine anchor-candidate": f"{cosine.mean():.3f} ± {cosine.std():.3f} (over {count} anchors; 1 = identical)",
        "pixel cosine per candidate": ", ".join(f"{c:.3f}" for c in cosine.mean(0)),
    }
