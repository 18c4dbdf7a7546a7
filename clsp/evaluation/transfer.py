"""``clsp transfer``: a run's frozen encoder on other datasets, by the linear transfer protocol
(:mod:`clsp.evaluation.logistic`) and weighted kNN (k 20), with the features cached beside the run.

A target's images get the encoder's channels (the grey/RGB rule of ``data.channels``) and its input size (shorter
side resized, antialiased, centre crop: ``data.image_size``), then its own normalisation (``backbone.json``'s mean
and std). Protocol splits: the target's ``labeled_split`` (train), its ``val`` split when it has one (official
validation), else a random 20 % of train (seed 0), and its ``test_split``.
"""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from clsp.atomic import atomic_write, atomic_write_text, file_sha256
from clsp.config import Config, DataConfig, TransferTarget
from clsp.data import ImageSet, load_images_at
from clsp.errors import ClspError
from clsp.evaluation.knn import knn_accuracy
from clsp.evaluation.logistic import WEIGHT_DECAYS, linear_transfer, validation_rows
from clsp.evaluation.report import METRICS_FILE, write_report
from clsp.features import extract_features
from clsp.progress import note, progress_bar
from clsp.run_folder import DATA_LOCATION_FIELDS, keep_earlier
from clsp.run_layout import RunLayout

FEATURES_VERSION = 1
"""Bumped when the image rule or the feature pass changes, so older cached features are not reused."""
TARGET_FIELDS = ("name", "metric", "max_train")
"""``--target`` keys of the target itself; every other key is a ``data`` field."""
KNN_K = 20


def parse_target(spec: str) -> TransferTarget:
    """A ``--target`` value: a source name (``fashion_mnist``) or ``key=value`` pairs joined by commas
    (``source=torchvision,dataset=DTD,root=/data/dtd,max_train=5000``); values are YAML scalars."""
    pairs = [part.partition("=") for part in spec.split(",") if part]
    if len(pairs) == 1 and not pairs[0][1]:
        raw: dict[str, Any] = {"data": {"source": pairs[0][0]}}
    else:
        raw = {"data": {}}
        for key, sep, value in pairs:
            if not sep or not key:
                raise ClspError(f"--target {spec!r}: {key!r} is not key=value; e.g. --target source=folder,root=/data")
            parsed = yaml.safe_load(value) if value else None
            (raw if key in TARGET_FIELDS else raw["data"])[key] = parsed
    try:
        return TransferTarget.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ClspError(f"--target {spec!r}: {problems}") from None


def protocol_splits(data: DataConfig) -> tuple[str, str | None, str]:
    """``(train, validation or None, test)`` split names: None when the target has no validation split of its own
    (a folder's ``val/`` that its test split reads, for want of a ``test/``, is not one)."""
    names = data.splits
    if data.source == "folder":
        from clsp.data.folder_splits import folder_splits

        where = folder_splits(data)
        names = tuple(
            n
            for n in where
            if n == "val" and data.test_split in where and not where[n].overlaps(where[data.test_split])
        )
    val = "val" if "val" in names and "val" not in (data.labeled_split, data.test_split) else None
    return data.labeled_split, val, data.test_split


def adapted(data: DataConfig, spec: dict[str, Any]) -> DataConfig:
    """``data`` with the encoder's channels and input size (``backbone.json``: ``in_channels``, ``image_size``)."""
    return data.model_copy(update={"channels": int(spec["in_channels"]), "image_size": int(spec["image_size"])})


def target_images(
    target: TransferTarget, spec: dict[str, Any]
) -> tuple[tuple[str, str | None, str], dict[str, ImageSet]]:
    """The protocol's split names (:func:`protocol_splits`) and its ``train``, ``val`` and ``test`` images of
    ``target``, adapted to the encoder (labelled, read on access); ``train`` drawn down to ``max_train`` and ``val``
    cut from it when the target has no validation split."""
    data = adapted(target.data, spec)
    splits = train_split, val_split, test_split = protocol_splits(data)
    size = int(spec["image_size"])
    sets = {"train": load_images_at(data, train_split, size), "test": load_images_at(data, test_split, size)}
    for name, images in sets.items():
        if images.labels is None:
            raise ClspError(f"transfer target {target.label}: its {name} split has no labels; the protocol needs them")
    train = sets["train"]
    if target.max_train is not None and target.max_train < len(train):
        rows = np.sort(np.random.RandomState(0).permutation(len(train))[: target.max_train])
        train = train.subset(rows, f"{train.name}[{target.max_train} of {len(train)}]")
    if val_split is None:
        kept, held = validation_rows(len(train))
        sets["train"], sets["val"] = train.subset(kept, train.name), train.subset(held, f"{train.name} (random 20 %)")
    else:
        sets["train"], sets["val"] = train, load_images_at(data, val_split, size)
    return splits, sets


def features_key(encoder_sha256: str, target: TransferTarget, sets: dict[str, ImageSet]) -> dict[str, Any]:
    """What decides a target's cached features: the encoder's weights, each split's content and the image rule."""
    return {
        "version": FEATURES_VERSION,
        "encoder_sha256": encoder_sha256,
        "splits": {name: [images.name, len(images), images.fingerprint] for name, images in sets.items()},
        "max_train": target.max_train,
    }


def target_features(
    encoder: torch.nn.Module, spec: dict[str, Any], sets: dict[str, ImageSet], key: dict[str, Any], path: Path
) -> dict[str, Tensor]:
    """Float ``[N, D]`` features and int64 ``[N]`` labels of every split (``<split>``, ``<split>_labels``): read from
    ``path`` when it was written for ``key``, else computed (frozen encoder, no augmentation) and saved there. A file
    written for another key (the encoder was retrained, the data changed) is never used."""
    wanted = json.dumps(key, sort_keys=True)
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                stored = (f.metadata() or {}).get("key")
            if stored == wanted:
                return load_file(str(path))
            note(f"{path}: features of another encoder or data (retrained?); computing them again")
        except Exception as e:  # a truncated or foreign file: computed again
            note(f"{path}: unreadable cached features ({type(e).__name__}); computing them again")
    mean, std = spec["mean"], spec["std"]
    tensors: dict[str, Tensor] = {}
    for name, images in sets.items():
        tensors[name] = extract_features(encoder, images.images, mean, std, description=f"features ({name})")
        tensors[f"{name}_labels"] = torch.from_numpy(np.asarray(images.labels, np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), {"key": wanted})
    )
    return tensors


def transfer_target(
    encoder: torch.nn.Module, spec: dict[str, Any], encoder_sha256: str, target: TransferTarget, run: Path,
    knn_temperature: float,
) -> dict[str, Any]:  # fmt: skip
    """The protocol and kNN on one target: its figures (accuracies in %) as ``metrics.json`` stores them."""
    started = time.perf_counter()
    (train_split, val_split, test_split), sets = target_images(target, spec)
    key = features_key(encoder_sha256, target, sets)
    device = next(encoder.parameters()).device
    tensors = target_features(encoder, spec, sets, key, run / "transfer" / target.label / "features.safetensors")
    split = {name: (tensors[name].to(device), tensors[f"{name}_labels"].to(device)) for name in sets}
    metric = target.chosen_metric
    with progress_bar() as bar:
        task = bar.add_task(
            f"logistic regression ({target.label}, {len(WEIGHT_DECAYS)} C)", total=len(WEIGHT_DECAYS) + 1
        )
        fit = linear_transfer(split["train"], split["val"], split["test"], metric, on_fit=lambda: bar.advance(task))
    bank = (torch.cat([split["train"][0], split["val"][0]]), torch.cat([split["train"][1], split["val"][1]]))
    knn = knn_accuracy(*bank, *split["test"], ks=(KNN_K,), temperature=knn_temperature)[KNN_K]
    return {
        "metric": metric,
        "score": fit.top1 if metric == "top1" else fit.mean_per_class,
        "top1": fit.top1,
        "mean_per_class": fit.mean_per_class,
        "C": fit.C,
        "validation_score": fit.validation_score,
        "knn_top1": knn,
        "knn_k": KNN_K,
        "splits": {"train": train_split, "val": val_split, "test": test_split},
        "validation": f"{val_split} (official)" if val_split else "random 20 % of train (seed 0)",
        "num_train": len(sets["train"]),
        "num_val": len(sets["val"]),
        "num_test": len(sets["test"]),
        "max_train": target.max_train,
        "image_size": int(spec["image_size"]),
        "channels": int(spec["in_channels"]),
        "feature_dim": int(tensors["test"].shape[1]),
        "encoder_sha256": encoder_sha256,
        "target": target_settings(target),
        "seconds": time.perf_counter() - started,
    }


def target_settings(target: TransferTarget) -> dict[str, Any]:
    """What a transfer result depends on besides the encoder (where the target's files are may change)."""
    settings = target.model_dump(mode="json")
    settings["data"] = {k: v for k, v in settings["data"].items() if f"data.{k}" not in DATA_LOCATION_FIELDS}
    return settings


def kept_transfer(previous: Path, encoder_sha256: str) -> dict[str, Any]:
    """The ``transfer`` entries of the ``metrics.json`` at ``previous`` measured with this encoder (the ones a new
    ``clsp eval`` keeps); {} when there is none."""
    try:
        entries = json.loads(previous.read_text(encoding="utf-8")).get("transfer") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, dict) and v.get("encoder_sha256") == encoder_sha256}


def transfer_run(
    cfg: Config,
    targets: tuple[TransferTarget, ...],
    run: Path | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, dict[str, Any]]:
    """Transfer the frozen encoder of ``run`` (default ``run.output_dir``; ``clsp train`` and ``clsp eval`` done)
    to each target; the results join ``<run>/eval/metrics.json`` (``transfer``) and ``report.md``. A target this
    encoder was measured on before is refused unless ``resume`` (kept when its :func:`target_settings` are the
    same, else measured again) or ``overwrite`` (measured again)."""
    from clsp.accelerator import pick_device
    from clsp.contrastive.backbones import WEIGHTS_FILE, load_backbone

    if not targets:
        raise ClspError("no transfer target: pass --target (e.g. --target fashion_mnist) or set eval.transfer")
    run = Path(run or cfg.run.output_dir)
    layout = RunLayout(run)
    metrics_path = layout.eval / METRICS_FILE
    if not (layout.ssl / WEIGHTS_FILE).is_file() or not metrics_path.is_file():
        raise ClspError(f"{run}: no trained and evaluated encoder (ssl/{WEIGHTS_FILE}, eval/{METRICS_FILE}); run "
                        "`clsp train CONFIG` and `clsp eval CONFIG` first, or point --run at such a run")  # fmt: skip
    torch_device = pick_device(device)
    sha = file_sha256(layout.ssl / WEIGHTS_FILE)
    measured = kept_transfer(metrics_path, sha)
    earlier = [t.label for t in targets if t.label in measured]
    keep = keep_earlier(
        metrics_path, f"transfer results ({', '.join(earlier)})" if earlier else None, resume, overwrite,
        "keep them (measured again if their settings changed)",
    )  # fmt: skip
    kept = {t.label for t in targets if keep and measured.get(t.label, {}).get("target") == target_settings(t)}
    new = {}
    if len(kept) < len(targets):  # the encoder is loaded only when a target is left to measure
        encoder, spec = load_backbone(layout.ssl, torch_device)
        for p in encoder.parameters():
            p.requires_grad_(False)
        new = {
            t.label: transfer_target(encoder, spec, sha, t, run, cfg.eval.knn_temperature)
            for t in targets
            if t.label not in kept
        }
    results = {t.label: new[t.label] if t.label in new else measured[t.label] for t in targets}
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["transfer"] = {**measured, **results}
    atomic_write_text(metrics_path, json.dumps(metrics, indent=1))
    write_report(metrics, layout.eval / "report.md")
    return results
