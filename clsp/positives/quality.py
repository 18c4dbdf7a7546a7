"""How good a positive store is: does a candidate keep its anchor's class, is it a realistic image, and how far
does it stray from its anchor compared with an ordinary augmentation.

CLSP rests on one property of its positives: the anchor's semantics survive while its appearance changes
(method.md 2.1). Each measure is reported beside the value it takes on real images, so it can be trusted:

* **class kept** (needs labels): the share of candidates that an independent classifier, a logistic regression on
  the pixels of the labelled real training split, assigns to the anchor's label; its accuracy on the real test split
  beside it. A second, stronger judge (a small CNN trained on the same real labelled images only, :func:`fit_cnn_judge`)
  gives **class kept (CNN)**: on Fashion-MNIST the pixel regression is right on only ~84% of real test images, the
  CNN on ~89%, so it confuses fewer good positives with wrong ones.
* **off-manifold** (no labels needed): the share of candidates farther from every real training image than
  (almost) any real held-out image is, a split-conformal outlier test on the nearest-neighbour pixel distance
  (:func:`realism`); the rate on real held-out images beside it. A classifier's confidence is *not* used for this:
  the logistic regression is confident on pure noise (measured: noise scores "off" for under 1% at max p < 0.5),
  so "classifier unsure" is only reported as a secondary figure.
* **hardness**: RMS pixel distance (in [0, 1] units) between anchor and candidate, beside the distance between two
  augmented views of the same real image (the config's SSL augmentation) and between random pairs of real images;
  with a trained encoder the same three in its normalised features (``2 - 2 cos``, the CLSP term). Diversity: the
  distance between two candidates of one anchor.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clsp.config import AugmentConfig
from clsp.data.augment import NUM_UNIFORMS, Augmentation
from clsp.data.imageset import ImageSet
from clsp.data.pixels import resize_images
from clsp.features import Encoder, extract_features

CONFIDENCE_THRESHOLD = 0.5
"""A candidate whose top class probability is below this is one the classifier is unsure of."""
REALISM_QUANTILE = 0.99
"""Off-manifold threshold: this quantile of real held-out images' distance to their nearest real training image."""
MAX_CLASSIFIER_IMAGES = 10_000
"""The classifier is fit on at most this many labelled images (a random subset of larger splits)."""
MAX_REFERENCE_IMAGES = 10_000
"""Nearest-neighbour distances are taken to at most this many real training images (a random subset)."""
NEEDS_LABELS = "needs labels"
QUALITY_VERSION = 3
"""Bump when a measure changes, so cached scores (``quality.json``) are recomputed (3: the batched augmentation
draws the two views' hardness from new draws)."""
AUGMENT_CHUNK = 1024
"""Images augmented per batch by :func:`augmented_views` (bounds its float memory)."""


def _pixels(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, H*W*C]`` in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255


@dataclass
class ReferenceClassifier:
    """A logistic regression on standardised pixels, fit on real labelled images only; never sees a synthetic one."""

    model: Any
    """Has ``predict_proba`` on float pixels ``[N, H*W*C]`` in [0, 1] and ``classes_``."""
    image_size: int
    num_train: int
    test_accuracy: float
    """Top-1 on the real test split, in [0, 1]."""
    test_unsure: float
    """Share of real test images whose top probability is below :data:`CONFIDENCE_THRESHOLD`."""

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``[N, H, W, C]`` at :attr:`image_size` -> float ``[N, classes]``."""
        return self.model.predict_proba(_pixels(images))


def fit_reference_classifier(train: ImageSet, test: ImageSet, image_size: int, seed: int = 0) -> ReferenceClassifier:
    """Fit the classifier on ``train`` (labelled, resized to ``image_size``) and measure it on ``test``."""
    rows = _classifier_rows(len(train), seed)
    x_train = _pixels(resize_images(train.images[rows], image_size))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    with warnings.catch_warnings():  # a not fully converged fit is still judged by its test accuracy, printed
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, train.labels[rows])
    return _measured(model, image_size, len(rows), test)


class CNNJudge:
    """A small CNN (two 3x3 conv blocks with BatchNorm and max-pool, pooled to 4x4, a hidden linear layer) as an
    sklearn-like classifier: ``predict_proba`` on float pixels ``[N, H*W*C]`` in [0, 1] of ``shape`` (H, W, C)."""

    def __init__(self, shape: tuple[int, int, int], classes: np.ndarray, seed: int) -> None:
        self.shape, self.classes_ = shape, classes
        nn = torch.nn
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(shape[2], 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, len(classes)),
            )  # fmt: skip

    def _images(self, pixels: np.ndarray) -> torch.Tensor:
        h, w, c = self.shape
        return torch.from_numpy(pixels).reshape(-1, h, w, c).permute(0, 3, 1, 2) * 2 - 1

    def fit(self, pixels: np.ndarray, labels: np.ndarray, epochs: int, seed: int) -> "CNNJudge":
        x, y = self._images(pixels), torch.from_numpy(np.searchsorted(self.classes_, labels)).long()
        optimizer = torch.optim.Adam(self.net.parameters(), lr=2e-3)
        order = torch.Generator().manual_seed(seed)
        self.net.train()
        for _ in range(epochs):
            for rows in torch.randperm(len(x), generator=order).split(128):
                loss = F.cross_entropy(self.net(x[rows]), y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.net.eval()
        return self

    @torch.no_grad()
    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        x = self._images(pixels)
        return torch.cat([self.net(rows).softmax(1) for rows in x.split(1024)]).numpy()


CNN_JUDGE_EPOCHS = 4


def fit_cnn_judge(train: ImageSet, test: ImageSet, image_size: int, seed: int = 0) -> ReferenceClassifier:
    """The second judge: :class:`CNNJudge` trained on the same real labelled images as
    :func:`fit_reference_classifier` (at most :data:`MAX_CLASSIFIER_IMAGES`, no augmentation, Adam, :data:`CNN_JUDGE_EPOCHS` epochs),
    measured on ``test``."""
    rows = _classifier_rows(len(train), seed)
    images = resize_images(train.images[rows], image_size)
    model = CNNJudge(images.shape[1:], np.unique(train.labels), seed)
    model.fit(_pixels(images), train.labels[rows], CNN_JUDGE_EPOCHS, seed)
    return _measured(model, image_size, len(rows), test)


def _classifier_rows(n: int, seed: int) -> np.ndarray:
    """The labelled images a judge is fit on: all, or a seeded subset of :data:`MAX_CLASSIFIER_IMAGES`."""
    rows = np.arange(n)
    if n > MAX_CLASSIFIER_IMAGES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_CLASSIFIER_IMAGES, replace=False))
    return rows


def _measured(model: Any, image_size: int, num_train: int, test: ImageSet) -> ReferenceClassifier:
    test_probs = model.predict_proba(_pixels(resize_images(test.images, image_size)))
    return ReferenceClassifier(
        model=model,
        image_size=image_size,
        num_train=num_train,
        test_accuracy=float((model.classes_[test_probs.argmax(1)] == test.labels).mean()),
        test_unsure=float((test_probs.max(1) < CONFIDENCE_THRESHOLD).mean()),
    )


def class_scores(
    classifier: ReferenceClassifier, candidates: np.ndarray, anchor_labels: np.ndarray
) -> dict[str, float | list[float]]:
    """Class-kept and classifier-unsure shares of uint8 ``[n, k, H, W, C]`` candidates of anchors labelled ``[n]``."""
    n, k = candidates.shape[:2]
    probs = classifier.probabilities(candidates.reshape(n * k, *candidates.shape[2:]))
    predicted = classifier.model.classes_[probs.argmax(1)].reshape(n, k)
    kept = predicted == anchor_labels[:, None]
    return {
        "class_kept": float(kept.mean()),
        "class_kept_per_candidate": kept.mean(0).tolist(),
        "classifier_unsure": float((probs.max(1) < CONFIDENCE_THRESHOLD).mean()),
    }


def nearest_real_distance(reference: np.ndarray, images: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean pixel distance ([0, 1] units) from each uint8 image ``[N, H, W, C]`` to its nearest ``reference``
    image ``[M, H, W, C]``: float64 ``[N]``."""
    ref = torch.from_numpy(_pixels(reference)).double()
    x = torch.from_numpy(_pixels(images)).double()
    return torch.cat([torch.cdist(x[i : i + chunk], ref).min(1).values for i in range(0, len(x), chunk)]).numpy()


def realism(reference: np.ndarray, real_test: np.ndarray, samples: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Share of uint8 ``samples`` ``[N, H, W, C]`` off the real-image manifold, without labels.

    A sample is off-manifold when its distance to the nearest real training image (``reference``) exceeds the
    :data:`REALISM_QUANTILE` quantile of the same distance for real held-out images: a split-conformal outlier test
    (Bates et al., "Testing for outliers with conformal p-values", Ann. Stat. 2023), so a real image is flagged
    with probability ``1 - quantile``. The threshold is set on one random half of ``real_test``; the other half's
    flagged share is reported as the base rate.
    """
    order = np.random.default_rng(seed).permutation(len(real_test))
    calibration, held_out = real_test[order[: len(order) // 2]], real_test[order[len(order) // 2 :]]
    threshold = float(np.quantile(nearest_real_distance(reference, calibration), REALISM_QUANTILE))
    return {
        "off_manifold": float((nearest_real_distance(reference, samples) > threshold).mean()),
        "real_test_off_manifold": float((nearest_real_distance(reference, held_out) > threshold).mean()),
        "threshold": threshold,
        "quantile": REALISM_QUANTILE,
        "num_reference": len(reference),
        "space": "pixels",
    }


def augmented_views(images: np.ndarray, augment: AugmentConfig, seed: int) -> np.ndarray:
    """One draw of the SSL augmentation per image: uint8 ``[N, H, W, C]`` -> uint8 ``[N, S, S, C]`` (S the crop size;
    pixels kept in [0, 255], no normalisation), seeded by ``seed``."""
    channels = images.shape[3]
    unnormalised = augment.model_copy(update={"mean": None, "std": None})
    augmentation = Augmentation(unnormalised, images.shape[1], (0.0,) * channels, (1.0,) * channels)
    draws = torch.rand(len(images), NUM_UNIFORMS, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    views = [
        augmentation(torch.from_numpy(images[i : i + AUGMENT_CHUNK]).permute(0, 3, 1, 2), draws[i : i + AUGMENT_CHUNK])
        for i in range(0, len(images), AUGMENT_CHUNK)
    ]
    return (torch.cat(views).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over pairs of the RMS pixel difference, [0, 1] units, of uint8 ``[N, ...]`` arrays."""
    return float(np.sqrt(((_pixels(a) - _pixels(b)) ** 2).mean(1)).mean())


def pixel_hardness(
    anchors: np.ndarray, candidates: np.ndarray, augment: AugmentConfig, seed: int
) -> dict[str, float | None]:
    """RMS pixel distances for uint8 anchors ``[n, H, W, C]`` and candidates ``[n, k, H, W, C]``: anchor-candidate,
    two augmented views of one anchor, random anchor pairs, and two candidates of one anchor (None for k = 1)."""
    n, k = candidates.shape[:2]
    view1, view2 = augmented_views(anchors, augment, seed), augmented_views(anchors, augment, seed + 1)
    perm = np.random.default_rng(seed).permutation(n)
    return {
        "anchor_candidate": _rms(np.repeat(anchors, k, 0), candidates.reshape(n * k, *candidates.shape[2:])),
        "two_views": _rms(view1, view2),
        "random_pairs": _rms(anchors, anchors[perm]),
        "candidate_candidate": _rms(candidates[:, 0], candidates[:, 1]) if k > 1 else None,
    }


def feature_hardness(
    encoder: Encoder,
    anchors: np.ndarray,
    candidates: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    augment: AugmentConfig,
    seed: int,
) -> dict[str, float]:
    """The CLSP term on clean images, mean ``‖f̂(a) − f̂(b)‖² = 2 − 2 cos`` of L2-normalised encoder features:
    ``synthetic`` (anchor vs each candidate), ``two_views`` (two augmented views of one anchor) and
    ``random_pairs`` (two unrelated anchors). uint8 anchors ``[n, H, W, C]``, candidates ``[n, k, H, W, C]``."""
    n, k = candidates.shape[:2]

    def features(images: np.ndarray, what: str) -> torch.Tensor:
        return F.normalize(extract_features(encoder, images, mean, std, description=f"features ({what})"), dim=1)

    f_anchor = features(anchors, "anchors")
    f_cand = features(candidates.reshape(n * k, *candidates.shape[2:]), "candidates")
    f_view1 = features(augmented_views(anchors, augment, seed), "view 1")
    f_view2 = features(augmented_views(anchors, augment, seed + 1), "view 2")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))

    def term(a: torch.Tensor, b: torch.Tensor) -> float:
        return (2 - 2 * (a * b).sum(1)).mean().item()

    return {
        "synthetic": term(f_anchor.repeat_interleave(k, 0), f_cand),
        "two_views": term(f_view1, f_view2),
        "random_pairs": term(f_anchor, f_anchor[perm]),
        "num_anchors": n,
        "num_candidates": k,
    }


def score_positives(
    anchors: np.ndarray,
    candidates: np.ndarray,
    reference: np.ndarray,
    real_test: np.ndarray,
    augment: AugmentConfig,
    anchor_labels: np.ndarray | None = None,
    classifier: ReferenceClassifier | None = None,
    seed: int = 0,
    cnn_judge: ReferenceClassifier | None = None,
) -> dict[str, Any]:
    """Every label-free measure, and the class measures when ``classifier`` and ``anchor_labels`` are given.

    Args:
        anchors: uint8 ``[n, H, W, C]``, the clean images the candidates were made from.
        candidates: uint8 ``[n, k, H, W, C]``.
        reference: uint8 ``[M, H, W, C]`` real training images (subsampled to :data:`MAX_REFERENCE_IMAGES`).
        real_test: uint8 ``[T, H, W, C]`` real held-out images, which calibrate the off-manifold test.
        augment: the SSL augmentation whose two views set the scale of "hard".
        classifier, cnn_judge: the two judges (:func:`fit_reference_classifier`, :func:`fit_cnn_judge`); the second
            is optional and adds ``class_kept_cnn`` and ``cnn_judge``.

    Returns a JSON-ready dict; what cannot be computed without labels says :data:`NEEDS_LABELS`.
    """
    n, k = candidates.shape[:2]
    rng = np.random.default_rng(seed)
    if len(reference) > MAX_REFERENCE_IMAGES:
        reference = reference[np.sort(rng.choice(len(reference), MAX_REFERENCE_IMAGES, replace=False))]
    reference = np.asarray(reference)  # at most MAX_REFERENCE_IMAGES, read once
    manifold = realism(reference, real_test, candidates.reshape(n * k, *candidates.shape[2:]), seed)
    scores: dict[str, Any] = {
        "num_anchors": n,
        "num_candidates": k,
        "off_manifold": manifold.pop("off_manifold"),
        "realism": manifold,
        "pixel_distance": pixel_hardness(anchors, candidates, augment, seed),
    }
    if classifier is None or anchor_labels is None:
        scores.update(class_kept=NEEDS_LABELS, classifier_unsure=NEEDS_LABELS, classifier=NEEDS_LABELS)
        return scores
    scores.update(class_scores(classifier, candidates, anchor_labels))
    scores["classifier"] = {
        "kind": "logistic regression on standardised pixels, real labelled training images only",
        "num_train": classifier.num_train,
        "test_accuracy": classifier.test_accuracy,
        "test_unsure": classifier.test_unsure,
        "confidence_threshold": CONFIDENCE_THRESHOLD,
    }
    if cnn_judge is not None:
        scores["class_kept_cnn"] = class_scores(cnn_judge, candidates, anchor_labels)["class_kept"]
        scores["cnn_judge"] = {
            "kind": f"small CNN ({CNN_JUDGE_EPOCHS} epochs), real labelled training images only",
            "num_train": cnn_judge.num_train,
            "test_accuracy": cnn_judge.test_accuracy,
        }
    return scores


def quality_rows(scores: dict[str, Any]) -> dict[str, str]:
    """Name -> value rows for a summary table (CLI, report.md, demo)."""

    def pct(value: Any) -> str:
        return value if isinstance(value, str) else f"{100 * value:.1f}%"

    rows = {"anchors x candidates scored": f"{scores['num_anchors']} x {scores['num_candidates']}"}
    classifier = scores["classifier"]
    if isinstance(classifier, str):
        rows["class kept"] = NEEDS_LABELS
    else:
        rows["class kept"] = (
            f"{pct(scores['class_kept'])} (classifier on real test images: {pct(classifier['test_accuracy'])})"
        )
    if "cnn_judge" in scores:
        rows["class kept (CNN judge)"] = (
            f"{pct(scores['class_kept_cnn'])} (CNN on real test images: {pct(scores['cnn_judge']['test_accuracy'])})"
        )
    real = scores["realism"]
    rows["off-manifold (pixel NN distance)"] = (
        f"{pct(scores['off_manifold'])} (real test images: {pct(real['real_test_off_manifold'])})"
    )
    if not isinstance(classifier, str):
        rows["classifier unsure (max p < 0.5)"] = (
            f"{pct(scores['classifier_unsure'])} (real test images: {pct(classifier['test_unsure'])})"
        )
    d = scores["pixel_distance"]
    rows["pixel RMS anchor-candidate / two views / random pairs"] = (
        f"{d['anchor_candidate']:.3f} / {d['two_views']:.3f} / {d['random_pairs']:.3f}"
    )
    if d["candidate_candidate"] is not None:
        rows["pixel RMS between two candidates (diversity)"] = f"{d['candidate_candidate']:.3f}"
    return rows
