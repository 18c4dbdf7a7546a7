"""The shipped STL-10 configs end to end on a small folder in the real binary layout: diffusion, positives, SSL and
evaluation, with tiny models. STL-10 images are 96 px, the encoder is trained on 64 px crops and evaluated at 64 px
(method.md 4.2), and the positives are made at 64 px (diffusion.image_size)."""

import json
from pathlib import Path

import numpy as np
import pytest

from clsp.config import Config, load_config
from clsp.contrastive.backbones import load_backbone
from clsp.contrastive.train import train_ssl
from clsp.evaluation.evaluate import evaluate_run
from clsp.positives.store import PositiveStore

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = {"unlabeled": 32, "train": 30, "test": 20}
TINY = [
    "diffusion.unet=tiny",
    "diffusion.epochs=1",
    "diffusion.batch_size=16",
    "diffusion.warmup_steps=0",
    "diffusion.num_samples=0",
    "positives.num_candidates=2",
    "positives.num_steps=2",
    "positives.num_layers=1",
    "positives.batch_size=64",
    "ssl.backbone=small-cnn",
    "ssl.epochs=1",
    "ssl.batch_size=16",
    "ssl.warmup_epochs=0",
    "ssl.num_workers=0",
    "ssl.projector_hidden_dim=32",
    "ssl.projector_dim=16",
    "ssl.queue_size=32",
    "ssl.num_candidates=2",
    "eval.linear_epochs=2",
    "eval.linear_milestones=[1]",
    "eval.label_draws=1",
]


def stl10_config(name: str, root: Path, *overrides: str) -> Config:
    """``configs/{name}.yaml`` on the STL-10 folder in ``root``, writing to ``root/run``, with :data:`TINY`."""
    return load_config(
        REPO_ROOT / "configs" / f"{name}.yaml",
        [f"data.root={root}", f"run.output_dir={root / 'run'}", *TINY, *overrides],
    )


def shifted_store(cfg: Config) -> None:
    """A 64-px store made without diffusion: each unlabeled image resized 96 -> 64 and shifted by 1 and 2 pixels."""
    from clsp.positives.generate import anchor_images

    dataset, anchors = anchor_images(cfg, None)
    assert anchors.shape[1:] == (64, 64, 3)
    candidates = np.stack([np.roll(anchors, shift=j + 1, axis=2) for j in range(2)], axis=1)
    PositiveStore.from_array(
        candidates,
        cfg.positives_store,
        dataset_fingerprint=dataset.fingerprint,
        provenance={"made_by": "tests"},
        shard_size=16,
    )


@pytest.fixture
def seen_sizes(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[tuple[int, ...]]]:
    """The image shapes ``[H, W, C]`` the encoder is given in eval, per module: ``evaluate`` (probe and kNN) and
    ``quality`` (the alignment term). The real feature extractor runs; this only records its inputs."""
    import clsp.evaluation.evaluate
    import clsp.positives.quality

    seen: dict[str, set[tuple[int, ...]]] = {"evaluate": set(), "quality": set()}
    for name, module in (("evaluate", clsp.evaluation.evaluate), ("quality", clsp.positives.quality)):

        def recording(encoder, images, *args, _real=module.extract_features, _seen=seen[name], **kwargs):
            _seen.add(images.shape[1:])
            return _real(encoder, images, *args, **kwargs)

        monkeypatch.setattr(module, "extract_features", recording)
    return seen


def check_evaluated(cfg: Config, size: int) -> dict:
    """metrics.json holds the probe, kNN and alignment figures, evaluated at ``size`` px."""
    m = json.loads((cfg.run.output_dir / "eval" / "metrics.json").read_text())
    assert m["dataset"] == {
        "train": "stl10/train", "test": "stl10/test", "num_train": 30, "num_test": 20, "image_size": size,
    }  # fmt: skip
    assert 0 <= m["linear"]["top1"] <= m["linear"]["top5"] <= 100
    assert 0 <= m["knn"]["fixed_top1"] <= 100
    alignment = m["alignment"]
    assert alignment["num_anchors"] == SIZES["unlabeled"] and alignment["num_candidates"] == 2
    for key in ("synthetic", "two_views", "random_pairs"):
        assert 0 <= alignment[key] <= 4, key  # 2 - 2 cos of unit vectors
    assert m["positives_quality"]["num_anchors"] == SIZES["unlabeled"]
    assert f"both at {size} px" in (cfg.run.output_dir / "eval" / "report.md").read_text()
    return m


@pytest.mark.slow
def test_stl10_simclr_config_runs_diffusion_to_eval(tmp_path: Path, stl10_writer, seen_sizes) -> None:
    from clsp.diffusion.train import train_diffusion
    from clsp.positives.generate import generate_positives

    stl10_writer(tmp_path, SIZES)
    cfg = stl10_config("stl10_simclr_clsp", tmp_path)
    train_diffusion(cfg)
    assert generate_positives(cfg).complete
    train_ssl(cfg)
    assert load_backbone(cfg.run.output_dir / "ssl")[1]["image_size"] == 64
    evaluate_run(cfg)
    assert seen_sizes == {"evaluate": {(64, 64, 3)}, "quality": {(64, 64, 3)}}
    check_evaluated(cfg, 64)


def test_stl10_moco_config_trains_and_evaluates_at_64_px(tmp_path: Path, stl10_writer, seen_sizes) -> None:
    stl10_writer(tmp_path, SIZES)
    cfg = stl10_config("stl10_moco_clsp", tmp_path)
    assert cfg.ssl.method == "moco"
    shifted_store(cfg)
    train_ssl(cfg)
    evaluate_run(cfg)
    assert seen_sizes == {"evaluate": {(64, 64, 3)}, "quality": {(64, 64, 3)}}
    at_64 = check_evaluated(cfg, 64)

    for sizes in seen_sizes.values():
        sizes.clear()
    evaluate_run(stl10_config("stl10_moco_clsp", tmp_path, "eval.image_size=96"), overwrite=True)
    assert seen_sizes == {"evaluate": {(96, 96, 3)}, "quality": {(64, 64, 3)}}
    at_96 = check_evaluated(cfg, 96)
    assert at_96["alignment"] == at_64["alignment"]  # the CLSP term stays at the encoder's input size

    # `clsp features` on a split feeds the encoder its own 64 px too (it used to refuse the 96-px split).
    from typer.testing import CliRunner

    from clsp.cli import app

    overrides = [f"data.root={tmp_path}", f"run.output_dir={tmp_path / 'run'}", *TINY]
    args = ["features", str(REPO_ROOT / "configs" / "stl10_moco_clsp.yaml"), "--out", str(tmp_path / "f.npy")]
    result = CliRunner().invoke(app, [*args, *(f"--set={o}" for o in overrides)])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "f.npy").shape == (SIZES["test"], 256)
