"""``clsp eval``: evaluate a trained SSL run (method.md 4) and write ``metrics.json``, ``report.md`` and PNG plots.

Everything is read from and written under ``<run.output_dir>``: the backbone from ``ssl/``, the training log
``ssl/metrics.jsonl``, the positive store (when there is one) and the outputs into ``eval/``.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clsp.atomic import atomic_write_text, file_sha256
from clsp.config import Config, save_resolved_config
from clsp.data import ImageRows, ImageSet, load_images_at, load_training_images
from clsp.data.pixels import resize_images
from clsp.errors import ClspError
from clsp.evaluation.knn import knn_accuracy
from clsp.evaluation.label_efficient import label_efficient_eval
from clsp.evaluation.linear import train_linear_probe
from clsp.evaluation.plots import embedding_plot, read_metrics, training_curves
from clsp.evaluation.report import METRICS_FILE, write_report
from clsp.evaluation.transfer import kept_transfer
from clsp.features import extract_features
from clsp.positives.quality import feature_hardness, quality_rows
from clsp.positives.store import PositiveStore
from clsp.progress import note
from clsp.run_folder import DATA_LOCATION_FIELDS, changed_fields, keep_earlier, saved_config
from clsp.run_layout import RunLayout


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, Any]
    directory: Path
    seconds: float
    device: str
    """Where features, probe and kNN ran (:func:`clsp.accelerator.describe_device`)."""

    def summary(self) -> dict[str, object]:
        m = self.metrics
        knn = m["knn"]
        rows: dict[str, object] = {
            "run": m["run"],
            "method": m["method_label"],
            "linear top-1 / top-5": f"{m['linear']['top1']:.2f}% / {m['linear']['top5']:.2f}%",
            f"kNN top-1, k={knn['fixed_k']}": f"{knn['fixed_top1']:.2f}%",
            "kNN top-1, best k (chosen on test: optimistic)": f"{knn['best_top1']:.2f}% (k={knn['best_k']})",
        }
        for name, few in m.get("label_efficient", {}).items():
            rows[f"{name} labels ({few['images']} images, {few['draws']} draws): linear / kNN k={few['knn_k']}"] = (
                f"{few['linear_top1']:.2f} ± {few['linear_top1_std']:.2f}% / {few['knn_top1']:.2f} ± {few['knn_top1_std']:.2f}%"
            )
        if m["alignment"]:
            a = m["alignment"]
            rows["alignment ‖f(x)−f(s)‖² synthetic / two views / random pairs"] = (
                f"{a['synthetic']:.3f} / {a['two_views']:.3f} / {a['random_pairs']:.3f}"
            )
        if m.get("positives_quality"):
            q = quality_rows(m["positives_quality"])
            rows["positives: class kept"] = q["class kept"]
        rows["report"] = self.directory / "report.md"
        rows["device"] = self.device
        rows["time"] = f"{self.seconds:.0f} s"
        return rows


def method_label(spec: dict[str, Any]) -> str:
    """``SimCLR``, ``CLSP-SimCLR (λ=1)`` or ``SimCLR + real 3rd view (λ=1)`` from a ``backbone.json`` spec."""
    name = {"simclr": "SimCLR", "moco": "MoCo v2+", "nnclr": "NNCLR"}[spec["method"]]
    weight = spec.get("clsp_weight", 0.0)
    if not weight:
        return name
    if spec.get("positive") == "real":
        return f"{name} + real 3rd view (λ={weight:g})"
    return f"CLSP-{name} (λ={weight:g})"


def eval_image_size(cfg: Config, spec: dict[str, Any]) -> int:
    """The side the probe's and kNN's images are resized to: ``eval.image_size``, else the encoder's input size
    (``image_size`` in ``backbone.json``), as the spec evaluates STL-10's 96-px images at 64 px (method.md 4.2)."""
    return cfg.eval.image_size or int(spec["image_size"])


def _labelled(cfg: Config, split: str, size: int) -> ImageSet:
    """``split`` of ``cfg.data`` resized to uint8 ``[N, size, size, C]``; refused when it has no labels."""
    images = load_images_at(cfg.data, split, size)
    if images.labels is None:
        raise ClspError(f"data.{split!r} split of {cfg.data.source} has no labels; evaluation needs labelled splits")
    return images


def store_feature_hardness(
    store: PositiveStore, anchors: ImageRows, encoder, spec: dict[str, Any], cfg: Config, count: int
) -> dict[str, Any]:
    """The CLSP term on clean images for the first ``count`` anchors of ``store`` and their candidates, in the
    encoder's normalised features (see :func:`~clsp.positives.quality.feature_hardness`); positives made at another
    size than the encoder's input (``diffusion.image_size``) are resized to it first, as SSL training does."""
    anchors, candidates = anchors[:count], np.stack([store[i] for i in range(count)])
    size = spec["image_size"]
    if anchors.shape[1] != size:
        n, k = candidates.shape[:2]
        anchors = resize_images(anchors, size)
        candidates = resize_images(candidates.reshape(n * k, *candidates.shape[2:]), size).reshape(n, k, size, size, -1)
    return feature_hardness(encoder, anchors, candidates, spec["mean"], spec["std"], cfg.ssl.augment, cfg.run.seed)


def _positive_store(cfg: Config) -> PositiveStore | None:
    """The run's positive store with every shard re-hashed (a damaged one is refused before any work), or None."""

    root = cfg.positives_store
    if not (root / "manifest.json").is_file():
        return None
    return PositiveStore.open(root, check="full")


EVALUATED_SECTIONS = ("data", "positives", "eval", "run.seed")
"""What an evaluation depends on besides the encoder: ``--resume`` keeps one while these are unchanged."""


def current_evaluation(cfg: Config, encoder_sha256: str) -> dict[str, Any] | None:
    """The ``metrics.json`` in ``<output_dir>/eval`` when it evaluated this encoder (its weights' SHA-256) with
    ``cfg``'s :data:`EVALUATED_SECTIONS` (where the data files are may differ); None when it is stale or missing."""
    out = cfg.layout.eval
    saved = saved_config(out)
    try:
        metrics = json.loads((out / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved is None or not isinstance(metrics, dict) or metrics.get("encoder_sha256") != encoder_sha256:
        return None
    return None if changed_fields(saved, cfg, EVALUATED_SECTIONS, DATA_LOCATION_FIELDS) else metrics


def evaluate_run(cfg: Config, device: str = "auto", resume: bool = False, overwrite: bool = False) -> EvalResult:
    """Linear probe, kNN, alignment and plots for the backbone in ``<output_dir>/ssl``; returns the metrics.

    ``device``: ``auto`` (a CUDA GPU when usable, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. An evaluation
    already in ``<output_dir>/eval`` is refused unless ``resume`` (kept when :func:`current_evaluation`, else
    redone) or ``overwrite`` (redone).
    """
    from clsp.accelerator import describe_device, pick_device
    from clsp.contrastive.backbones import WEIGHTS_FILE, load_backbone

    requested, device = device, pick_device(device)

    started = time.perf_counter()
    ssl_dir = cfg.layout.ssl
    if not (ssl_dir / WEIGHTS_FILE).is_file():
        raise ClspError(f"{ssl_dir}: no {WEIGHTS_FILE}; train first (clsp train CONFIG) or fix run.output_dir")
    out = cfg.layout.eval
    encoder_sha256 = file_sha256(ssl_dir / WEIGHTS_FILE)
    earlier = f"an evaluation ({METRICS_FILE})" if (out / METRICS_FILE).is_file() else None
    if keep_earlier(out, earlier, resume, overwrite, "keep it (redone if the encoder or its settings changed)"):
        kept = current_evaluation(cfg, encoder_sha256)
        if kept is not None:
            return EvalResult(kept, out, kept.get("eval_seconds", 0.0), "none: kept from an earlier run (--resume)")
        note(f"{out}: the earlier evaluation was of another encoder or with other settings; evaluating again")
    store = _positive_store(cfg)
    save_resolved_config(cfg, out)
    torch.manual_seed(cfg.run.seed)
    encoder, spec = load_backbone(ssl_dir)
    encoder.to(device)
    for p in encoder.parameters():
        p.requires_grad_(False)  # method.md 4.2: the backbone is frozen
    mean, std = spec["mean"], spec["std"]
    size = eval_image_size(cfg, spec)
    train, test = _labelled(cfg, cfg.data.labeled_split, size), _labelled(cfg, cfg.data.test_split, size)
    e = cfg.eval
    # Flip-only probe augmentation, as the spec's, unless the data is not mirror-symmetric (ssl.augment.hflip_p 0).
    flip = cfg.ssl.augment.hflip_p > 0
    train_f = extract_features(encoder, train.images, mean, std, description="features (train)")
    train_f_flipped = extract_features(encoder, train.images, mean, std, hflip=True) if flip else None
    test_f = extract_features(encoder, test.images, mean, std, description="features (test)")
    train_l, test_l = torch.from_numpy(train.labels).long(), torch.from_numpy(test.labels).long()
    # The probe and kNN run where the encoder did (features are extracted to the CPU).
    train_f, test_f, train_l, test_l = (t.to(device) for t in (train_f, test_f, train_l, test_l))
    train_f_flipped = None if train_f_flipped is None else train_f_flipped.to(device)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training

    probe = train_linear_probe(
        train_f, train_l, test_f, test_l, train_features_flipped=train_f_flipped, epochs=e.linear_epochs,
        lr=e.linear_lr, milestones=e.linear_milestones, batch_size=e.linear_batch_size, seed=cfg.run.seed,
    )  # fmt: skip
    # kNN bank: the un-flipped training features (the reference draws a random flip per image; fixed here).
    ks = tuple(sorted({*e.knn_k, e.knn_k_fixed}))
    by_k = knn_accuracy(train_f, train_l, test_f, test_l, ks, e.knn_temperature)
    best_k = max(e.knn_k, key=lambda k: (by_k[k], -k))
    few_labels = label_efficient_eval(
        train_f, train_l, test_f, test_l, train_features_flipped=train_f_flipped, fractions=e.label_fractions,
        draws=e.label_draws, seed=cfg.run.seed, epochs=e.linear_epochs, lr=e.linear_lr,
        milestones=e.linear_milestones, batch_size=e.linear_batch_size, knn_k=e.knn_k_fixed,
        knn_temperature=e.knn_temperature,
    )  # fmt: skip

    train_images = load_training_images(cfg.data)
    if store is not None and (store.n != len(train_images) or not store.is_complete):
        store = None  # positives of a subset (--limit) or unfinished: no alignment term
    aligned = quality = None
    if store is not None:
        from clsp.positives.inspect import show_positives, store_dataset, store_quality

        anchors = store_dataset(store, cfg)[1]
        quality = store_quality(store, cfg)
        aligned = store_feature_hardness(store, anchors, encoder, spec, cfg, quality["num_anchors"])
        show_positives(store, anchors, 8, out / "positives.png")

    metrics: dict[str, Any] = {
        "run": str(cfg.run.output_dir),
        "seed": cfg.run.seed,
        "method_label": method_label(spec),
        "encoder_sha256": encoder_sha256,
        "ssl": {k: spec.get(k) for k in ("method", "clsp_weight", "positive", "epochs", "backbone")},
        "dataset": {
            "train": train.name,
            "test": test.name,
            "num_train": len(train),
            "num_test": len(test),
            "image_size": size,
        },
        "linear": {
            "top1": probe.top1,
            "top5": probe.top5,
            "epochs": e.linear_epochs,
            "lr": e.linear_lr,
            "flip_augmentation": flip,
            "final_train_loss": probe.train_loss[-1],
        },
        "knn": {
            "top1_by_k": {str(k): by_k[k] for k in ks},
            "best_k": best_k,
            "best_top1": by_k[best_k],
            "fixed_k": e.knn_k_fixed,
            "fixed_top1": by_k[e.knn_k_fixed],
            "temperature": e.knn_temperature,
            "note": "best k is chosen on the test set (as the reference does), so it is optimistic; fixed k is not",
        },
        "label_efficient": few_labels,
        "alignment": aligned,
        "positives_quality": quality,
        "training": _last_epoch(ssl_dir / "metrics.jsonl"),
    }
    files = _plots(cfg, out, test_f, test.labels, ssl_dir)
    if store is not None:
        files["positives"] = str(out / "positives.png")
    metrics["files"] = files
    # transfer figures of this very encoder stay (`clsp transfer` added them); a retrained one drops them
    metrics["transfer"] = kept_transfer(out / METRICS_FILE, encoder_sha256)
    seconds = time.perf_counter() - started
    metrics["eval_seconds"] = seconds
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=1))
    write_report(metrics, out / "report.md")
    return EvalResult(metrics, out, seconds, describe_device(device, requested))


def _last_epoch(path: Path) -> dict[str, float]:
    rows = read_metrics(path) if path.is_file() else []
    return rows[-1] if rows else {}


def _plots(cfg: Config, out: Path, test_features: Tensor, test_labels: np.ndarray, ssl_dir: Path) -> dict[str, str]:
    method = cfg.eval.embedding_plot
    files = {
        "embedding": embedding_plot(
            test_features.numpy(), test_labels, out / "embedding.png", method, f"test features ({method.upper()})"
        )
    }
    log = ssl_dir / "metrics.jsonl"
    if log.is_file() and read_metrics(log):
        files["curves"] = training_curves({cfg.run.output_dir.name: read_metrics(log)}, out / "curves.png")
    return {k: str(v) for k, v in files.items()}


COMPARED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "run": str,
    "method_label": str,
    "linear.top1": (int, float),
    "linear.top5": (int, float),
    "knn.fixed_top1": (int, float),
    "knn.best_top1": (int, float),
    "alignment": (dict, type(None)),
}
"""The ``metrics.json`` fields (dotted) that ``clsp compare`` reads, with their JSON types."""


def _field(metrics: Any, dotted: str) -> Any:
    """The value at ``dotted`` in nested dicts; a fresh ``object()`` (an instance of no JSON type) when absent."""
    for part in dotted.split("."):
        if not isinstance(metrics, dict) or part not in metrics:
            return object()
        metrics = metrics[part]
    return metrics


def read_run_metrics(run: Path) -> dict[str, Any]:
    """The ``metrics.json`` of a run folder (``<run>/eval/metrics.json``) or of a path to the file itself; refused
    unless it holds the :data:`COMPARED_FIELDS`."""
    path = run if run.suffix == ".json" else RunLayout(run).eval / METRICS_FILE
    if not path.is_file():
        raise ClspError(f"{path}: not found; run `clsp eval CONFIG` for that run first")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # bad JSON or not UTF-8
        raise ClspError(f"{path}: not valid JSON ({e}); re-run clsp eval") from None
    wrong = [name for name, kind in COMPARED_FIELDS.items() if not isinstance(_field(metrics, name), kind)]
    if wrong:
        raise ClspError(
            f"{path}: not a metrics.json written by clsp eval (missing or wrong: {', '.join(wrong)}); "
            "run `clsp eval CONFIG` for that run and compare its <output_dir>/eval/metrics.json"
        )
    return metrics
