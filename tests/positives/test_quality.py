"""Positive quality on hand-made stores whose answer is known, against hand computations, and through the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clsp.config import AugmentConfig, Config, load_config, save_resolved_config
from clsp.data import ImageSet, load_images
from clsp.positives.generate import anchor_images
from clsp.positives.inspect import score_store, store_quality
from clsp.positives.quality import (
    NEEDS_LABELS,
    feature_hardness,
    fit_cnn_judge,
    fit_reference_classifier,
    nearest_real_distance,
    pixel_hardness,
    quality_rows,
    realism,
)
from clsp.positives.store import PositiveStore

REPO_ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)


def digits(tmp_path: Path, *overrides: str) -> Config:
    return load_config(REPO_ROOT / "configs/digits.yaml", [f"run.output_dir={tmp_path}", *overrides])


def make_store(cfg: Config, candidates: np.ndarray) -> PositiveStore:
    """A complete store at ``<output_dir>/positives`` holding ``candidates`` [N, k, H, W, C] for cfg's training set."""
    train, _ = anchor_images(cfg, len(candidates))
    root = cfg.run.output_dir / "positives"
    store = PositiveStore.from_array(
        candidates, root, dataset_fingerprint=train.fingerprint, provenance={"made_by": "tests"}, shard_size=512
    )
    save_resolved_config(cfg, root)
    return store


def test_copies_of_the_anchors_keep_every_class_and_stay_on_the_manifold(tmp_path: Path) -> None:
    cfg = digits(tmp_path)
    train = load_images(cfg.data, "train")
    scores = score_store(make_store(cfg, np.repeat(train.images[:, None], 2, axis=1)), cfg)
    assert scores["classifier"]["test_accuracy"] > 0.9  # the judge is trustworthy on real test images
    assert scores["class_kept"] > 0.97 and scores["off_manifold"] == 0.0
    assert scores["cnn_judge"]["test_accuracy"] > 0.9 and scores["class_kept_cnn"] > 0.97  # the second judge too
    assert scores["pixel_distance"]["anchor_candidate"] == 0.0 and scores["pixel_distance"]["candidate_candidate"] == 0
    assert scores["realism"]["real_test_off_manifold"] < 0.04  # the test flags ~1% of real images by design
    assert scores["num_anchors"] == len(train) and scores["dataset"] == "digits/train"


def test_pure_noise_keeps_no_class_and_is_off_the_manifold(tmp_path: Path) -> None:
    cfg = digits(tmp_path)
    n = len(load_images(cfg.data, "train"))
    scores = score_store(make_store(cfg, RNG.integers(0, 256, (n, 2, 16, 16, 1), dtype=np.uint8)), cfg)
    assert scores["class_kept"] < 0.2  # chance is 0.1
    assert scores["off_manifold"] == 1.0
    d = scores["pixel_distance"]
    assert d["anchor_candidate"] > d["random_pairs"] > 0 and d["two_views"] > 0


def test_the_nearest_distance_and_the_conformal_threshold_match_numpy() -> None:
    reference = RNG.integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    images = RNG.integers(0, 256, (7, 4, 4, 1), dtype=np.uint8)
    ref = reference.reshape(30, -1).astype(np.float64) / 255
    x = images.reshape(7, -1).astype(np.float64) / 255
    expected = np.sqrt(((x[:, None] - ref[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nearest_real_distance(reference, images), expected, rtol=1e-6)

    real_test = RNG.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
    result = realism(reference, real_test, images, seed=3)
    order = np.random.default_rng(3).permutation(40)
    threshold = np.quantile(nearest_real_distance(reference, real_test[order[:20]]), 0.99)
    assert result["threshold"] == pytest.approx(threshold)
    assert result["off_manifold"] == pytest.approx(np.mean(expected > threshold))


def test_pixel_hardness_matches_a_hand_computation() -> None:
    anchors = RNG.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    candidates = RNG.integers(0, 256, (6, 3, 8, 8, 1), dtype=np.uint8)
    d = pixel_hardness(anchors, candidates, AugmentConfig(hflip_p=0.0), seed=0)
    a, c = anchors.astype(np.float64) / 255, candidates.astype(np.float64) / 255
    expected = np.mean([np.sqrt(((a[i] - c[i, j]) ** 2).mean()) for i in range(6) for j in range(3)])
    assert d["anchor_candidate"] == pytest.approx(expected, rel=1e-5)
    diversity = np.mean([np.sqrt(((c[i, 0] - c[i, 1]) ** 2).mean()) for i in range(6)])
    assert d["candidate_candidate"] == pytest.approx(diversity, rel=1e-5)
    # no augmentation at all: two views are the image itself
    identity = AugmentConfig(crop_scale=(1.0, 1.0), color_jitter_p=0.0, grayscale_p=0.0, hflip_p=0.0)
    assert pixel_hardness(anchors, candidates, identity, seed=0)["two_views"] == 0.0


def test_feature_hardness_matches_a_float64_hand_computation() -> None:
    n, k = 10, 3
    anchors = RNG.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    candidates = RNG.integers(0, 256, (n, k, 4, 4, 1), dtype=np.uint8)
    weight = torch.randn(5, 16)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5, bias=False))
    encoder[1].weight.data = weight
    result = feature_hardness(encoder, anchors, candidates, [0.5], [0.25], AugmentConfig(), seed=0)

    def features(images: np.ndarray) -> np.ndarray:
        x = (images.reshape(len(images), -1).astype(np.float64) / 255 - 0.5) / 0.25
        f = x @ weight.double().numpy().T
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    fa, fc = features(anchors), features(candidates.reshape(n * k, 4, 4, 1)).reshape(n, k, 5)
    expected = np.mean([np.sum((fa[i] - fc[i, j]) ** 2) for i in range(n) for j in range(k)])
    assert result["synthetic"] == pytest.approx(expected, rel=1e-5)
    assert result["num_anchors"] == n and result["num_candidates"] == k
    assert 0 < result["random_pairs"] < 4 and 0 < result["two_views"] < 4


def test_the_classifier_is_fit_on_train_and_measured_on_test(tmp_path: Path) -> None:
    cfg = digits(tmp_path)
    train, test = load_images(cfg.data, "train"), load_images(cfg.data, "test")
    classifier = fit_reference_classifier(train, test, 16)
    assert classifier.num_train == len(train)
    accuracy = (classifier.model.predict(test.images.reshape(len(test), -1) / 255) == test.labels).mean()
    assert accuracy == pytest.approx(classifier.test_accuracy)


def test_the_cnn_judge_learns_from_real_labels_only_and_is_seeded(tmp_path: Path) -> None:
    cfg = digits(tmp_path)
    train, test = load_images(cfg.data, "train"), load_images(cfg.data, "test")
    judge = fit_cnn_judge(train, test, 16, seed=3)
    assert judge.num_train == len(train) and judge.test_accuracy > 0.9
    probs = judge.model.predict_proba(test.images.reshape(len(test), -1).astype(np.float32) / 255)
    assert probs.shape == (len(test), 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (judge.model.classes_[probs.argmax(1)] == test.labels).mean() == pytest.approx(judge.test_accuracy)
    shuffled = ImageSet("shuffled", train.images, np.random.default_rng(0).permutation(train.labels), train.class_names)
    assert fit_cnn_judge(shuffled, test, 16, seed=3).test_accuracy < 0.3  # it learns the labels, nothing else


def test_scores_are_cached_until_the_store_changes(tmp_path: Path) -> None:
    cfg = digits(tmp_path)
    train = load_images(cfg.data, "train")
    store = make_store(cfg, np.repeat(train.images[:64, None], 1, axis=1))
    first = store_quality(store, cfg, limit=32)
    cached = json.loads((store.root / "quality.json").read_text())
    assert cached["scores"] == first and cached["key"]["anchors"] == 32
    (store.root / "quality.json").write_text(json.dumps({**cached, "scores": {"marker": 1}}))
    assert store_quality(store, cfg, limit=32) == {"marker": 1}  # same key: read back
    assert store_quality(store, cfg, limit=16)["num_anchors"] == 16  # another key: scored again


def write_unlabelled_folder(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        pixels = np.zeros((16, 16, 3), dtype=np.uint8)
        pixels[i % 16, :, :] = 255  # one bright row per image: distinct, structured images
        Image.fromarray(pixels).save(root / f"{i:03d}.png")


def clsp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clsp.cli", *args], capture_output=True, text=True, cwd=REPO_ROOT)


def test_score_command_without_labels_reports_what_needs_them(tmp_path: Path) -> None:
    write_unlabelled_folder(tmp_path / "images", 40)
    config = tmp_path / "folder.yaml"
    config.write_text(
        f"run: {{output_dir: {tmp_path / 'run'}}}\ndata: {{source: folder, root: {tmp_path / 'images'}}}\n"
    )
    cfg = load_config(config)
    images = load_images(cfg.data, cfg.data.train_split).images
    store = make_store(cfg, np.stack([images, np.roll(images, 1, axis=1)], axis=1))
    scores = score_store(store, cfg)
    assert scores["class_kept"] == NEEDS_LABELS and scores["classifier"] == NEEDS_LABELS
    assert scores["off_manifold"] >= 0 and scores["pixel_distance"]["anchor_candidate"] > 0
    assert quality_rows(scores)["class kept"] == NEEDS_LABELS
    result = clsp("positives", "score", str(config))
    assert result.returncode == 0, result.stderr
    assert "needs labels" in result.stdout and "off-manifold" in result.stdout


def test_score_command_refuses_a_store_made_for_other_data(tmp_path: Path) -> None:
    cfg = digits(tmp_path)
    train = load_images(cfg.data, "train")
    make_store(cfg, np.repeat(train.images[:, None], 1, axis=1))
    result = clsp("positives", "score", "configs/digits.yaml", "--set", f"run.output_dir={tmp_path}", "--set",
                  "data.split_seed=1")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dataset fingerprint" in result.stderr and "clsp positives generate" in result.stderr
    missing = clsp("positives", "score", "configs/digits.yaml", "--set", f"run.output_dir={tmp_path / 'none'}")
    assert missing.returncode == 2 and "no manifest.json" in missing.stderr


def test_sweep_weights_with_the_tiny_unet(tmp_path: Path) -> None:
    from clsp.diffusion.unet import build_unet

    build_unet("tiny", 16, 1).save_pretrained(tmp_path / "unet")
    sets = [f"run.output_dir={tmp_path}", "positives.num_steps=5", "positives.num_candidates=2"]
    result = clsp("positives", "sweep", "configs/digits.yaml", *[a for s in sets for a in ("--set", s)],
                  "--weights", "0,1", "--layers", "1,2", "--limit", "6")  # fmt: skip
    assert result.returncode == 0, result.stderr
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [(p["weight"], p["num_layers"]) for p in sweep["points"]] == [(0, 1), (1, 1), (0, 2), (1, 2)]
    assert all(p["num_anchors"] == 6 and p["num_candidates"] == 2 for p in sweep["points"])
    assert all(0 <= p["class_kept"] <= 1 for p in sweep["points"])
    # w = 1 is unconditional sampling: the number of blended layers cannot change it
    assert sweep["points"][1]["pixel_distance"] == sweep["points"][3]["pixel_distance"]
    assert Image.open(tmp_path / "sweep" / "sweep.png").size[0] > 800
    assert (
        Image.open(tmp_path / "sweep" / "sweep_grid.png").size[1]
        > Image.open(tmp_path / "sweep" / "sweep_grid.png").size[0]
    )
    assert not list((tmp_path / "sweep").glob(".stores-*"))  # the temporary stores are gone
    bad = clsp("positives", "sweep", "configs/digits.yaml", "--weights", "0,2")
    assert bad.returncode == 2 and "--weights" in bad.stderr
