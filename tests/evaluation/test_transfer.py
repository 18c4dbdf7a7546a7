"""``clsp transfer`` on a random-encoder digits run and hand-written Fashion-MNIST idx files: the image rule, the
feature cache (reused, never used for another encoder), the results in metrics.json, report.md and compare, and
``--target`` parsing."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clsp.config import DataConfig, TransferTarget
from clsp.contrastive.backbones import build_backbone, save_backbone
from clsp.data import load_images
from clsp.data.pixels import resize_images, to_channels
from clsp.errors import ClspError
from clsp.evaluation import transfer as transfer_module
from clsp.evaluation.evaluate import evaluate_run, read_run_metrics
from clsp.evaluation.report import comparison_rows
from clsp.evaluation.transfer import parse_target, target_features, target_images, transfer_run
from tests.data.test_mnist import write_split
from tests.evaluation.test_evaluate import random_run


def fashion_files(root: Path) -> Path:
    write_split(root, "train", 120, 0, gz=True)
    write_split(root, "test", 40, 1, gz=True)
    return root


def test_target_images_get_the_encoder_s_channels_and_size_and_a_random_fifth_validates() -> None:
    spec = {"in_channels": 3, "image_size": 20}
    _, sets = target_images(TransferTarget(data=DataConfig(source="digits")), spec)
    train, test = (load_images(DataConfig(source="digits", image_size=8), s) for s in ("train", "test"))
    expected_test = resize_images(to_channels(test.images, 3), 20)
    np.testing.assert_array_equal(np.asarray(sets["test"].images), expected_test)
    assert len(sets["val"]) == len(train) // 5 and len(sets["train"]) + len(sets["val"]) == len(train)
    assert sets["train"].images.shape[1:] == (20, 20, 3)
    _, capped = target_images(TransferTarget(data=DataConfig(source="digits"), max_train=100), spec)
    assert (len(capped["train"]), len(capped["val"]), len(capped["test"])) == (80, 20, len(test))


def test_features_are_reused_for_the_same_encoder_and_never_for_another(tmp_path: Path, monkeypatch, capsys) -> None:
    encoder, _ = build_backbone("small-cnn", in_channels=1)
    spec = {"in_channels": 1, "image_size": 16, "mean": [0.3], "std": [0.3]}
    _, sets = target_images(TransferTarget(data=DataConfig(source="digits"), max_train=60), spec)
    path, key = tmp_path / "features.safetensors", {"encoder_sha256": "a"}
    first = target_features(encoder, spec, sets, key, path)
    assert first["train"].shape == (48, 256) and first["val_labels"].dtype == torch.int64

    def refuse(*args, **kwargs):
        raise AssertionError("features computed again")

    monkeypatch.setattr(transfer_module, "extract_features", refuse)
    again = target_features(encoder, spec, sets, key, path)
    assert all(torch.equal(first[k], again[k]) for k in first)
    with pytest.raises(AssertionError, match="computed again"):  # a retrained encoder: the file is stale
        target_features(encoder, spec, sets, {"encoder_sha256": "b"}, path)
    assert "features of another encoder or data" in capsys.readouterr().err


def test_transfer_joins_metrics_report_and_compare_and_a_new_encoder_drops_it(tmp_path: Path) -> None:
    cfg = random_run(tmp_path / "run")
    evaluate_run(cfg)
    target = parse_target(f"source=fashion_mnist,root={fashion_files(tmp_path / 'fashion')},name=fashion")
    results = transfer_run(cfg, (target,))
    r = results["fashion"]
    assert (r["num_train"], r["num_val"], r["num_test"]) == (96, 24, 40) and r["metric"] == "top1"
    assert r["validation"] == "random 20 % of train (seed 0)" and r["image_size"] == 16 and r["channels"] == 1
    assert 1e-5 <= r["C"] <= 1e6 and 0 <= r["top1"] <= 100 and r["score"] == r["top1"]
    metrics = read_run_metrics(tmp_path / "run")
    assert metrics["transfer"]["fashion"] == r
    assert "## Transfer" in (tmp_path / "run" / "eval" / "report.md").read_text()
    headers, rows = comparison_rows([metrics], group=False)
    assert rows[0][headers.index("transfer fashion")] == f"{r['top1']:.2f}"
    with pytest.raises(
        ClspError, match=r"metrics.json: holds transfer results \(fashion\) of an earlier run; pass --resume"
    ):
        transfer_run(cfg, (target,))
    assert transfer_run(cfg, (target,), resume=True) == {"fashion": r}  # kept, not measured again
    fewer = target.model_copy(update={"max_train": 50})  # other settings: measured again
    assert transfer_run(cfg, (fewer,), resume=True)["fashion"]["num_train"] < 96
    assert transfer_run(cfg, (target,), overwrite=True)["fashion"]["seconds"] != r["seconds"]
    assert evaluate_run(cfg, overwrite=True).metrics["transfer"]["fashion"]["num_train"] == 96  # same encoder: kept
    encoder, _ = build_backbone("small-cnn", in_channels=1)  # "retrained"
    spec = json.loads((tmp_path / "run" / "ssl" / "backbone.json").read_text())
    save_backbone(encoder, tmp_path / "run" / "ssl", spec)
    assert evaluate_run(cfg, resume=True).metrics["transfer"] == {}  # another encoder: evaluated again


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("source=folder,root", r"'root' is not key=value"),
        ("source=fashion_mnist,metric=best", r"metric: Input should be 'auto', 'top1' or 'mean_per_class'"),
        ("source=torchvision,dataset=Nope,root=/x", r"data: Value error, dataset 'Nope': not supported"),
        ("source=folder,root=/x,colour=1", r"data.colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_target_is_one_line_naming_what_to_fix(spec: str, message: str) -> None:
    with pytest.raises(ClspError, match=message) as caught:
        parse_target(spec)
    assert "\n" not in str(caught.value)
    assert parse_target("digits").data.source == "digits"
    assert parse_target("source=torchvision,dataset=Flowers102,root=/d").chosen_metric == "mean_per_class"


def test_transfer_refuses_a_run_that_was_not_evaluated(tmp_path: Path) -> None:
    cfg = random_run(tmp_path)
    with pytest.raises(ClspError, match=r"run `clsp train CONFIG` and `clsp eval CONFIG` first"):
        transfer_run(cfg, (parse_target("digits"),))
    with pytest.raises(ClspError, match="no transfer target"):
        transfer_run(cfg, ())


def test_a_folder_s_own_val_validates_unless_its_test_split_reads_it(tmp_path: Path) -> None:
    from clsp.evaluation.transfer import protocol_splits
    from tests.data.test_cache import write_folder

    for split in ("train", "val", "test"):
        write_folder(tmp_path / "three" / split, 4)
    assert protocol_splits(DataConfig(source="folder", root=tmp_path / "three")) == ("train", "val", "test")
    for split in ("train", "val"):
        write_folder(tmp_path / "two" / split, 4)
    assert protocol_splits(DataConfig(source="folder", root=tmp_path / "two")) == ("train", None, "test")
    assert protocol_splits(DataConfig(source="fashion_mnist")) == ("train", None, "test")
