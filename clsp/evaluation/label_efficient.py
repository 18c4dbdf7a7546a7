"""Label-efficient evaluation (SimCLR §7 style): the linear probe and kNN from a class-balanced 1 % or 10 % of the
labelled split, averaged over several label draws. Full-label accuracy on small datasets sits near its ceiling;
with few labels, differences in representation quality show.
"""

import math
import statistics
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clsp.evaluation.knn import knn_accuracy
from clsp.evaluation.linear import train_linear_probe
from clsp.progress import progress_bar


def fraction_label(fraction: float) -> str:
    """``0.01`` -> ``"1%"``: the key of a fraction in ``metrics.json`` and the tables."""
    return f"{100 * fraction:g}%"


def balanced_subset(labels: np.ndarray, fraction: float, seed: int, draw: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset of int ``labels [N]``: ``max(1, round(fraction * N / classes))``
    images of every class (all of a smaller class), drawn without replacement; a pure function of
    ``(seed, draw, fraction)``."""
    classes, counts = np.unique(labels, return_counts=True)
    per_class = max(1, round(fraction * len(labels) / len(classes)))
    rng = np.random.default_rng([seed, draw, round(fraction * 1e6)])
    picks = [
        rng.choice(np.flatnonzero(labels == c), min(per_class, count), replace=False)
        for c, count in zip(classes, counts, strict=True)
    ]
    return np.sort(np.concatenate(picks))


def label_efficient_eval(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    train_features_flipped: Tensor | None,
    fractions: tuple[float, ...],
    draws: int,
    seed: int,
    epochs: int,
    lr: float,
    milestones: tuple[int, ...],
    batch_size: int,
    knn_k: int,
    knn_temperature: float,
) -> dict[str, Any]:
    """For every fraction, the linear probe and the kNN (k = ``knn_k``, capped at the subset size) trained on
    ``draws`` class-balanced label subsets; accuracies in % on the full test set, mean and sample std over draws.

    The probe is the full-label one (same lr, SGD, flip-only augmentation) given the same number of SGD steps:
    ``epochs`` grows as the subset shrinks, milestones in proportion. Features are float ``[N, D]``.
    """
    labels = train_labels.cpu().numpy()
    full_steps = epochs * math.ceil(len(labels) / batch_size)
    results: dict[str, Any] = {}
    with progress_bar() as progress:
        task = progress.add_task("label-efficient probes", total=len(fractions) * draws)
        for fraction in fractions:
            linear, knn = [], []
            for draw in range(draws):
                rows = torch.from_numpy(balanced_subset(labels, fraction, seed, draw)).to(train_features.device)
                sub_epochs = max(epochs, math.ceil(full_steps / math.ceil(len(rows) / batch_size)))
                probe = train_linear_probe(
                    train_features[rows], train_labels[rows], test_features, test_labels,
                    train_features_flipped=None if train_features_flipped is None else train_features_flipped[rows],
                    epochs=sub_epochs, lr=lr, milestones=tuple(m * sub_epochs // epochs for m in milestones),
                    batch_size=batch_size, seed=seed + draw, show_progress=False,
                )  # fmt: skip
                k = min(knn_k, len(rows))
                by_k = knn_accuracy(
                    train_features[rows], train_labels[rows], test_features, test_labels, (k,), knn_temperature
                )
                linear.append(probe.top1)
                knn.append(by_k[k])
                progress.advance(task)
            results[fraction_label(fraction)] = {
                "fraction": fraction,
                "images": len(rows),
                "draws": draws,
                "linear_top1": statistics.mean(linear),
                "linear_top1_std": statistics.stdev(linear) if draws > 1 else 0.0,
                "knn_top1": statistics.mean(knn),
                "knn_top1_std": statistics.stdev(knn) if draws > 1 else 0.0,
                "knn_k": k,
                "linear_by_draw": linear,
                "knn_by_draw": knn,
            }
    return results
