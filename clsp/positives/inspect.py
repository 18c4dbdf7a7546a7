"""Look at a positive store: a grid of anchors beside their candidates, and how good the candidates are."""

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clsp.atomic import atomic_write_text
from clsp.config import RESOLVED_CONFIG_NAME, Config, load_config
from clsp.data import ImageRows, ImageSet, load_images
from clsp.data.pixels import resize_images
from clsp.errors import ClspError
from clsp.grid import save_image_grid
from clsp.positives.generate import anchor_images
from clsp.positives.quality import (
    QUALITY_VERSION,
    ReferenceClassifier,
    fit_cnn_judge,
    fit_reference_classifier,
    score_positives,
)
from clsp.positives.store import PositiveStore

DEFAULT_SCORE_ANCHORS = 2000
"""Anchors (with all their candidates) scored unless a limit is given: every digits image, a subset of CIFAR."""
QUALITY_FILE = "quality.json"


def store_config(store: PositiveStore) -> Config:
    """The resolved config saved beside a store by ``clsp positives generate``."""
    config_path = store.root / RESOLVED_CONFIG_NAME
    if not config_path.is_file():
        raise ClspError(f"{store.root}: no {RESOLVED_CONFIG_NAME} beside the store, so its anchors are unknown")
    return load_config(config_path)


def store_dataset(store: PositiveStore, cfg: Config | None = None) -> tuple[ImageSet, ImageRows]:
    """The training images a store was made from (``cfg``'s data, default the config beside the store) and its
    anchors, uint8 ``[N, H, W, C]`` at the store's size; refused unless the store was made from exactly these."""
    dataset, anchors = anchor_images(cfg or store_config(store), store.n)
    store.check_matches(len(dataset), dataset.fingerprint, dataset.name)
    return dataset, anchors


@dataclass(frozen=True)
class RealReference:
    """What candidates are scored against, the same for every store of one dataset at one image size."""

    reference: ImageRows
    """uint8 ``[N, H, W, C]``: every real training image (the manifold), also for a ``--limit`` store."""
    real_test: np.ndarray
    """uint8 ``[T, H, W, C]``: the real test split, which calibrates the off-manifold test."""
    classifier: ReferenceClassifier | None
    """None unless the training, labelled and test splits all have labels."""
    cnn_judge: ReferenceClassifier | None
    """The second judge, under the same condition."""


def real_reference(cfg: Config, size: int) -> RealReference:
    """The :class:`RealReference` of ``cfg``'s data at ``size`` px; the classifier is seeded by ``positives.seed``."""
    train, reference = anchor_images(cfg, None)
    test = load_images(cfg.data, cfg.data.test_split)
    labelled = load_images(cfg.data, cfg.data.labeled_split)
    classifier = cnn_judge = None
    if train.labels is not None and labelled.labels is not None and test.labels is not None:
        classifier = fit_reference_classifier(labelled, test, size, cfg.positives.seed)
        cnn_judge = fit_cnn_judge(labelled, test, size, cfg.positives.seed)
    return RealReference(reference, resize_images(test.images, size), classifier, cnn_judge)


def score_store(
    store: PositiveStore, cfg: Config | None = None, limit: int | None = None, real: RealReference | None = None
) -> dict[str, Any]:
    """Quality of the first ``limit`` (default :data:`DEFAULT_SCORE_ANCHORS`) anchors' candidates in ``store``
    (see :mod:`clsp.positives.quality`). ``cfg`` names the data (default: the config beside the store); the class
    measures need labels on the training, labelled and test splits and say "needs labels" otherwise. ``real``
    (default: built here) lets several stores of one dataset share one :func:`real_reference`.
    Random draws (augmentations, subsets) are seeded by ``positives.seed``: a store scores the same in every run."""
    cfg = cfg or store_config(store)
    dataset, anchors = store_dataset(store, cfg)
    count = min(limit or DEFAULT_SCORE_ANCHORS, store.n)
    candidates = np.stack([store[i] for i in range(count)])
    real = real or real_reference(cfg, store.image_shape[0])
    scores = score_positives(
        anchors[:count],
        candidates,
        real.reference,
        real.real_test,
        cfg.ssl.augment,
        anchor_labels=None if dataset.labels is None else dataset.labels[:count],
        classifier=real.classifier,
        seed=cfg.positives.seed,
        cnn_judge=real.cnn_judge,
    )
    return {"store": str(store.root), "dataset": dataset.name, **scores}


def store_quality(store: PositiveStore, cfg: Config | None = None, limit: int | None = None) -> dict[str, Any]:
    """:func:`score_store`, cached in ``<store>/quality.json`` under a key of everything the scores depend on
    (the shards' SHA-256, the data and augmentation settings, the anchor count and the seed)."""
    cfg = cfg or store_config(store)
    key = {
        "version": QUALITY_VERSION,
        "shards": [store.shard_sha256(i) for i in store.finished_shards()],
        "data": cfg.data.model_dump(mode="json"),
        "augment": cfg.ssl.augment.model_dump(mode="json"),
        "anchors": min(limit or DEFAULT_SCORE_ANCHORS, store.n),
        "seed": cfg.positives.seed,
    }
    path = store.root / QUALITY_FILE
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return cached["scores"]
    except (OSError, ValueError, AttributeError):
        pass  # no cache, or an unreadable one: score again
    scores = score_store(store, cfg, limit)
    with contextlib.suppress(OSError):  # a read-only store is scored every time
        atomic_write_text(path, json.dumps({"key": key, "scores": scores}, indent=1))
    return scores


def show_positives(store: PositiveStore, anchors: ImageRows, num_rows: int, path: Path) -> Path:
    """Write a PNG grid, one row per anchor: the anchor, then its k candidates."""
    num_rows = min(num_rows, store.n)
    rows = np.concatenate([np.concatenate([anchors[i : i + 1], store[i]]) for i in range(num_rows)])
    return save_image_grid(rows, path, nrow=store.num_candidates + 1)
