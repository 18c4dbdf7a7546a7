"""``clsp eval``'s checks before any work and ``clsp compare``'s reading of metrics.json (evaluate.py)."""

import json
from pathlib import Path

import pytest
import torch

from clsp.config import load_config
from clsp.contrastive.backbones import build_backbone, save_backbone
from clsp.data import load_images
from clsp.errors import ClspError
from clsp.evaluation.evaluate import evaluate_run, read_run_metrics
from clsp.positives.store import PositiveStore

REPO_ROOT = Path(__file__).resolve().parents[2]
METRICS = {
    "run": "runs/a",
    "method_label": "SimCLR",
    "linear": {"top1": 90.0, "top5": 99.0},
    "knn": {"fixed_top1": 88.0, "best_top1": 89.0},
    "alignment": None,
}


def test_a_damaged_positive_store_is_refused_before_any_work(tmp_path: Path) -> None:
    cfg = load_config(REPO_ROOT / "configs" / "digits.yaml", [f"run.output_dir={tmp_path}"])
    encoder, dim = build_backbone("small-cnn", in_channels=1)
    spec = {"backbone": "small-cnn", "stem": "cifar", "in_channels": 1, "feature_dim": dim, "image_size": 16}
    save_backbone(encoder, tmp_path / "ssl", {**spec, "method": "simclr", "mean": [0.3], "std": [0.3]})
    train = load_images(cfg.data, cfg.data.train_split)
    store = PositiveStore.from_array(
        train.images[:, None], tmp_path / "positives", dataset_fingerprint=train.fingerprint, provenance={},
        shard_size=512,
    )  # fmt: skip
    shard = store.root / "shard_00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0x01
    shard.write_bytes(bytes(raw))
    with pytest.raises(ClspError, match=f"^{shard}: SHA-256 differs from the manifest.*clsp positives verify"):
        evaluate_run(cfg)
    assert not (tmp_path / "eval").exists()  # refused before anything was written or computed


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (json.dumps({"accuracy": 0.9}), "missing or wrong: run, method_label, linear.top1"),
        (json.dumps([1, 2]), "missing or wrong: run, method_label"),
        (json.dumps({**METRICS, "linear": {"top1": "high", "top5": 99.0}}), "missing or wrong: linear.top1)"),
        (json.dumps({k: v for k, v in METRICS.items() if k != "alignment"}), "missing or wrong: alignment)"),
        ("{", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_compare_refuses_a_metrics_json_not_written_by_eval(tmp_path: Path, content: str | bytes, needle: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ClspError) as caught:
        read_run_metrics(path)
    assert str(caught.value).startswith(f"{path}: ") and needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_compare_reads_the_fields_it_compares(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(METRICS))
    assert read_run_metrics(tmp_path) == METRICS


def random_run(tmp_path: Path, *overrides: str):
    """A digits run whose backbone is a random small CNN (no training needed to exercise eval)."""
    cfg = load_config(
        REPO_ROOT / "configs" / "digits.yaml",
        [f"run.output_dir={tmp_path}", "eval.linear_epochs=3", "eval.linear_milestones=[2]", "eval.label_draws=2"],
    )
    encoder, dim = build_backbone("small-cnn", in_channels=1)
    spec = {"backbone": "small-cnn", "stem": "cifar", "in_channels": 1, "feature_dim": dim, "image_size": 16}
    save_backbone(encoder, tmp_path / "ssl", {**spec, "method": "simclr", "mean": [0.3], "std": [0.3]})
    return cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_eval_refuses_an_unusable_device_before_any_work(tmp_path: Path) -> None:
    cfg = random_run(tmp_path)
    with pytest.raises(ClspError, match="--device cuda: no CUDA GPU is usable here"):
        evaluate_run(cfg, "cuda")
    assert not (tmp_path / "eval").exists()
    assert evaluate_run(cfg).device == "cpu (no CUDA GPU found)"  # auto says why it runs on the CPU


def test_an_earlier_evaluation_is_refused_kept_or_redone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = random_run(tmp_path)
    first = evaluate_run(cfg).metrics
    with pytest.raises(ClspError, match=r"eval: holds an evaluation \(metrics.json\) of an earlier run; pass --resume"):
        evaluate_run(cfg)
    kept = evaluate_run(cfg, resume=True)
    assert kept.metrics == first and kept.device.startswith("none: kept")
    moved = load_config(tmp_path / "eval" / "config.yaml", ["data.root=/elsewhere"])  # where the files are: kept
    assert evaluate_run(moved, resume=True).metrics == first
    fewer = evaluate_run(load_config(tmp_path / "eval" / "config.yaml", ["eval.linear_epochs=2"]), resume=True)
    assert fewer.metrics["linear"]["epochs"] == 2 and "evaluating again" in capsys.readouterr().err
    again = evaluate_run(cfg, overwrite=True).metrics
    assert again["eval_seconds"] != first["eval_seconds"] and again["linear"] == first["linear"]  # deterministic


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_eval_on_the_gpu_matches_the_cpu(tmp_path: Path) -> None:
    cfg = random_run(tmp_path)
    cpu = evaluate_run(cfg, "cpu").metrics
    gpu = evaluate_run(cfg, "cuda")
    assert gpu.device.startswith("cuda")
    assert gpu.metrics["knn"]["fixed_top1"] == pytest.approx(cpu["knn"]["fixed_top1"], abs=0.5)
    assert gpu.metrics["linear"]["top1"] == pytest.approx(cpu["linear"]["top1"], abs=1.0)
