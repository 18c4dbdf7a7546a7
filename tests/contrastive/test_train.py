"""The SSL training loop end to end on the digits data: every method, resume, stores, NaN, two processes."""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from clsp.contrastive.backbones import load_backbone
from clsp.contrastive.train import train_ssl
from clsp.errors import ClspError

# lr 0.01 without warm-up: at the paper's 0.3-0.5 a batch of 64 collapses in the first steps (the paper warms up
# from 1e-3); 50 nominal epochs keep the cosine lr and the MoCo momentum nearly constant over the 24 steps run.
LEARNS = ["data.test_fraction=0.5", "ssl.batch_size=64", "ssl.lr=0.01", "ssl.warmup_epochs=0", "ssl.epochs=50"]


@pytest.mark.parametrize("clsp_weight", [0.0, 0.5])
@pytest.mark.parametrize("method", ["simclr", "moco", "nnclr"])
def test_every_method_trains_and_reduces_the_loss(fast_config, method, clsp_weight):
    cfg = fast_config(*LEARNS, f"ssl.method={method}", f"ssl.clsp_weight={clsp_weight}")
    losses = train_ssl(cfg, max_steps=24).losses
    assert len(losses) == 24
    # Steps 0-1 are skipped: MoCo's first logits are against the random initial queue.
    early, late = sum(losses[2:6]) / 4, sum(losses[-4:]) / 4
    assert late < early - 0.02, losses


def test_moco_resume_continues_exactly_and_exports_the_same_backbone(fast_config, tmp_path):
    overrides = ["ssl.method=moco", "ssl.clsp_weight=0.5", "ssl.lr=0.01", "ssl.epochs=2", "ssl.save_every_epochs=1"]
    full = train_ssl(fast_config(*overrides, f"run.output_dir={tmp_path / 'full'}"))
    cfg = fast_config(*overrides, f"run.output_dir={tmp_path / 'split'}")
    first = train_ssl(cfg, max_steps=7)
    assert first.backbone is None and first.step == 7
    second = train_ssl(cfg, resume=True)
    assert second.step == full.step == 10
    torch.testing.assert_close(torch.tensor(first.losses + second.losses), torch.tensor(full.losses), rtol=0, atol=1e-6)

    lines = [json.loads(line) for line in (tmp_path / "split" / "ssl" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "full" / "ssl" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[1]["loss"] == pytest.approx(expected[1]["loss"], abs=1e-6)
    assert {"lr", "ssl", "clsp", "moco_momentum", "probe_train_acc", "images_per_s"} <= lines[1].keys()

    net_full, spec = load_backbone(tmp_path / "full" / "ssl")
    net_split, _ = load_backbone(tmp_path / "split" / "ssl")
    assert spec["backbone"] == "small-cnn" and spec["in_channels"] == 1 and spec["feature_dim"] == 256
    x = torch.randn(4, 1, spec["image_size"], spec["image_size"])
    torch.testing.assert_close(net_split(x), net_full(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_the_state_and_resume_continues_exactly(fast_config, tmp_path, monkeypatch, signum):
    import clsp.contrastive.train

    overrides = ["ssl.clsp_weight=0.5", "ssl.lr=0.01", "ssl.epochs=2"]
    full = train_ssl(fast_config(*overrides, f"run.output_dir={tmp_path / 'full'}"))
    momentum = clsp.contrastive.train.moco_momentum

    def ctrl_c_in_step_4(step, *args):  # called once per step, before its forward pass
        if step == 3:
            os.kill(os.getpid(), signum)
        return momentum(step, *args)

    cfg = fast_config(*overrides, f"run.output_dir={tmp_path / 'split'}")
    monkeypatch.setattr(clsp.contrastive.train, "moco_momentum", ctrl_c_in_step_4)
    first = train_ssl(cfg)
    monkeypatch.undo()
    assert first.step == 4 and first.backbone is None and (tmp_path / "split" / "ssl" / "state").is_dir()
    second = train_ssl(cfg, resume=True)
    assert second.step == full.step == 10 and second.backbone is not None
    torch.testing.assert_close(torch.tensor(first.losses + second.losses), torch.tensor(full.losses), rtol=0, atol=1e-6)


def test_store_with_another_n_is_refused(fast_config, make_store, tmp_path):
    cfg = fast_config()
    make_store(cfg, tmp_path / "short", n=100)
    with pytest.raises(ClspError, match="N 100"):
        train_ssl(fast_config(f"ssl.positives={tmp_path / 'short'}"))


def test_missing_store_says_how_to_fix(fast_config, tmp_path):
    with pytest.raises(ClspError, match="clsp_weight=0"):
        train_ssl(fast_config(f"ssl.positives={tmp_path / 'nowhere'}"))


def test_baseline_and_real_view_ablation_need_no_store(fast_config, tmp_path):
    for i, overrides in enumerate((["ssl.clsp_weight=0"], ["ssl.positive=real"])):
        out = f"run.output_dir={tmp_path / str(i)}"
        cfg = fast_config(*overrides, f"ssl.positives={tmp_path / 'nowhere'}", "ssl.epochs=1", out)
        assert train_ssl(cfg).backbone.is_file()


def test_non_finite_loss_stops_with_a_clear_message(fast_config):
    cfg = fast_config("ssl.lr=1e30", "ssl.warmup_epochs=0", "ssl.epochs=4", "ssl.save_every_epochs=1")
    with pytest.raises(ClspError, match=r"loss became nan at step \d+; \S+ was not saved yet: lower ssl\.lr"):
        train_ssl(cfg)


def test_blown_up_weights_never_reach_the_saved_state_and_a_lower_lr_resumes(fast_config, tmp_path):
    # One step per epoch and a save after each: the step that blows the weights up is an epoch end, whose state
    # used to be saved because its own loss (computed before its update) was still finite; the next loss is not.
    one_step_epochs = ["ssl.batch_size=128", "ssl.warmup_epochs=0", "ssl.save_every_epochs=1", "ssl.epochs=8"]
    cfg = fast_config(*one_step_epochs, "ssl.lr=0.01")
    train_ssl(cfg, max_steps=2)
    with pytest.raises(ClspError, match="last good state"):
        train_ssl(fast_config(*one_step_epochs, "ssl.lr=1e30"), resume=True)
    state = tmp_path / "run" / "ssl" / "state"
    from safetensors.torch import load_file

    for name in ("model.safetensors", "optimizer.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(state / name).values()), name
    resumed = train_ssl(cfg, resume=True)  # the fix the message suggests: a lower lr, --resume
    assert resumed.backbone is not None and all(map(math.isfinite, resumed.losses))


def test_a_finished_run_is_not_replaced_without_resume_or_overwrite(fast_config, tmp_path):
    cfg = fast_config("ssl.epochs=1")
    first = train_ssl(cfg)
    weights = first.backbone.read_bytes()
    with pytest.raises(ClspError, match="--resume to continue it, --overwrite to start over"):
        train_ssl(fast_config("ssl.epochs=1", "run.seed=5"))
    assert first.backbone.read_bytes() == weights
    again = train_ssl(fast_config("ssl.epochs=1", "run.seed=5"), overwrite=True)
    assert again.backbone.read_bytes() != weights
    assert len((tmp_path / "run" / "ssl" / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_refuses_changed_settings_naming_them_and_allows_more_epochs(fast_config):
    train_ssl(fast_config("ssl.epochs=1"))
    with pytest.raises(ClspError, match=r"ssl\.batch_size: 32 -> 64; ssl\.projector_dim: 32 -> 16") as e:
        train_ssl(fast_config("ssl.epochs=1", "ssl.batch_size=64", "ssl.projector_dim=16"), resume=True)
    assert "\n" not in str(e.value)
    with pytest.raises(ClspError, match=r'ssl\.method: "simclr" -> "moco"'):
        train_ssl(fast_config("ssl.epochs=1", "ssl.method=moco"), resume=True)
    assert train_ssl(fast_config("ssl.epochs=2"), resume=True).step == 10


def test_metrics_hold_each_epoch_once_after_a_kill_between_saves(fast_config, tmp_path):
    cfg = fast_config("ssl.epochs=3", "ssl.save_every_epochs=2")
    train_ssl(cfg, max_steps=10)  # epochs 1-2 logged, state saved at step 10
    metrics = tmp_path / "run" / "ssl" / "metrics.jsonl"
    # A kill after epoch 3's line was written (step 15) but before its state was saved.
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([*lines, json.dumps({**json.loads(lines[-1]), "epoch": 3, "step": 15})]) + "\n")
    train_ssl(cfg, resume=True)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


def test_resume_refuses_another_or_a_replaced_store_and_the_backbone_names_its_store(fast_config, make_store, tmp_path):
    cfg = fast_config("ssl.epochs=2")
    train_ssl(cfg, max_steps=5)
    other = tmp_path / "other"
    make_store(cfg, other, k=3)
    with pytest.raises(
        ClspError, match=r"--resume: .* trained on positives store \w{12}, but ssl.positives now holds store"
    ) as e:
        train_ssl(fast_config("ssl.epochs=2", f"ssl.positives={other}"), resume=True)
    assert "\n" not in str(e.value)
    # the same folder, replaced in place by a store of other positives
    import shutil

    shutil.rmtree(tmp_path / "positives")
    make_store(cfg, tmp_path / "positives", k=3)
    with pytest.raises(ClspError, match=r"trained on positives store"):
        train_ssl(cfg, resume=True)
    finished = train_ssl(fast_config("ssl.epochs=1"), overwrite=True)
    _, spec = load_backbone(finished.backbone.parent)
    from clsp.positives.store import PositiveStore

    assert spec["positives"] == {
        "path": str(tmp_path / "positives"),
        "identity": PositiveStore.open(tmp_path / "positives").identity,
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda p: p.update(step="ten"), "field 'step' is \"ten\", expected an integer"),
        (lambda p: p.pop("step"), "field 'step' is missing"),
        (lambda p: p.update(step=-7), "field 'step' is -7, expected at least 0"),
        (lambda p: p["sums"].pop("loss"), "field 'sums' has keys"),
    ],
)
def test_a_tampered_progress_file_is_one_line_and_loses_nothing(fast_config, tmp_path, change, match):
    cfg = fast_config("ssl.epochs=3", "ssl.save_every_epochs=1")
    train_ssl(cfg, max_steps=10)
    progress = tmp_path / "run" / "ssl" / "state" / "progress.json"
    metrics = tmp_path / "run" / "ssl" / "metrics.jsonl"
    logged = metrics.read_text()
    saved = json.loads(progress.read_text())
    change(saved)
    progress.write_text(json.dumps(saved))
    with pytest.raises(ClspError, match=rf"progress.json: {match}.*--overwrite") as e:
        train_ssl(cfg, resume=True)
    assert "\n" not in str(e.value)
    assert metrics.read_text() == logged


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(fast_config, tmp_path, capsys):
    cfg = fast_config("ssl.epochs=3", "ssl.save_every_epochs=1")
    train_ssl(cfg, max_steps=10)
    metrics = tmp_path / "run" / "ssl" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 3, "st')  # killed mid-write
    train_ssl(cfg, resume=True)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    assert "torn last line" in capsys.readouterr().err


def test_a_second_writer_of_one_run_folder_is_refused(fast_config, tmp_path):
    from clsp.run_folder import run_lock

    with run_lock(tmp_path / "run" / "ssl"), pytest.raises(ClspError, match="being written by another process"):
        train_ssl(fast_config("ssl.epochs=1"))


def test_bf16_trains_close_to_fp32_but_not_equal(fast_config, tmp_path):
    runs = {}
    for precision in ("no", "bf16"):
        # batch 32: a CPU without bf16 units emulates bf16 many times slower than fp32 (30 s here, 67 s at batch 64)
        overrides = [*LEARNS, "ssl.batch_size=32", "ssl.clsp_weight=0.5", f"ssl.mixed_precision={precision}"]
        cfg = fast_config(*overrides, f"run.output_dir={tmp_path / precision}")
        runs[precision] = torch.tensor(train_ssl(cfg, max_steps=24).losses)
    fp32, bf16 = runs["no"], runs["bf16"]
    assert len(bf16) == 24 and torch.isfinite(bf16).all()
    assert bf16[-4:].mean() < bf16[2:6].mean() - 0.02, bf16  # it learns, as fp32 does
    relative = ((bf16 - fp32) / fp32).abs()
    assert relative.max() > 1e-4, "bf16 gave the fp32 losses: autocast did not run"
    assert relative.max() < 0.03, relative  # measured: <= 1% after 24 steps at batch 64, 2.3% at batch 32


COMPARED_STEPS = 3


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_processes_with_sync_bn_match_one_process(fast_config, fast_overrides, tmp_path, repo_root, method):
    # 180 images, global batch 128: one step per epoch, so metrics.jsonl's epoch lines are the step losses.
    overrides = [f"ssl.method={method}", "ssl.batch_size=128", "ssl.queue_size=256", "ssl.epochs=6", "ssl.lr=0.02"]
    overrides += ["ssl.warmup_epochs=0", "ssl.sync_bn=true"]
    single = train_ssl(fast_config(*overrides, f"run.output_dir={tmp_path / 'one'}"), max_steps=COMPARED_STEPS)
    args = [f"--set={o}" for o in [*fast_overrides, *overrides, f"run.output_dir={tmp_path / 'two'}"]]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "clsp/train.py"]
    run = subprocess.run(
        [*cmd, "--config", "configs/digits.yaml", *args], cwd=repo_root, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "two" / "ssl" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines]
    assert len(losses) == 6
    # Every compared step: weights, BatchNorm statistics, the MoCo queue and the lr schedule must stay in step.
    assert losses[:COMPARED_STEPS] == pytest.approx(single.losses, abs=1e-5)
    if method == "simclr":  # MoCo's loss first rises while real keys replace the random initial queue
        assert sum(losses[-2:]) < sum(losses[:2]), losses


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_package_says_how_to_fix(fast_config):
    with pytest.raises(ClspError, match="pip install tensorboard"):
        train_ssl(fast_config("ssl.tensorboard=true"))
