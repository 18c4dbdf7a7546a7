import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clsp.config import config_from_dict, load_config
from clsp.diffusion import train
from clsp.diffusion.unet import load_unet
from clsp.errors import ClspError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _config(tmp_path, data=None, **diffusion):
    raw = {
        "run": {"output_dir": str(tmp_path / "run")},
        **({"data": data} if data else {}),
        "diffusion": {
            "unet": "tiny",
            "epochs": 1,
            "batch_size": 64,
            "warmup_steps": 5,
            "lr": 2e-3,
            "save_every_epochs": 1,
            "num_samples": 0,
            **diffusion,
        },
        "positives": {"num_steps": 10},
    }
    return config_from_dict(raw)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "unet" / "diffusion_pytorch_model.safetensors")


def test_loss_falls_and_outputs_are_written(tmp_path):
    cfg = _config(tmp_path, epochs=2, num_samples=4)
    result = train.train_diffusion(cfg)
    assert result.step == result.total_steps == 2 * (1347 // 64)
    assert np.mean(result.losses[-5:]) < 0.5 * np.mean(result.losses[:5])
    out = cfg.run.output_dir
    assert load_config(out / "diffusion" / "config.yaml") == cfg
    assert (out / "diffusion" / "samples.png").is_file()
    assert list(load_unet(str(out / "unet"), 16, 1).config.block_out_channels) == [16, 32]
    state = out / "diffusion" / "state"
    assert {"model.safetensors", "ema.safetensors", "progress.json"} <= {p.name for p in state.iterdir()}
    assert not list(state.glob("custom_checkpoint*"))  # nothing of ours is pickled


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = train.train_diffusion(_config(tmp_path / "whole"))

    calls = {"n": 0}
    real_loss = train.training_loss

    def interrupt_at_step_8(*args):
        calls["n"] += 1
        if calls["n"] == 8:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C mid-step: the step finishes, then the run stops
        return real_loss(*args)

    monkeypatch.setattr(train, "training_loss", interrupt_at_step_8)
    cut = _config(tmp_path / "cut")
    first = train.train_diffusion(cut)
    assert first.interrupted and first.step == 8 and first.unet_dir is None
    monkeypatch.setattr(train, "training_loss", real_loss)
    second = train.train_diffusion(cut, resume=True)
    assert not second.interrupted and second.step == whole.step and len(second.losses) == whole.step - 8
    np.testing.assert_allclose(first.losses + second.losses, whole.losses, rtol=1e-5)
    a, b = _weights(cut.run.output_dir), _weights(tmp_path / "whole" / "run")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_a_run_is_kept_and_resume_refuses_another_unet_in_one_line(tmp_path):
    train.train_diffusion(_config(tmp_path, batch_size=256))
    with pytest.raises(ClspError, match="--resume to continue it, --overwrite to start over"):
        train.train_diffusion(_config(tmp_path, batch_size=256))
    with pytest.raises(ClspError, match=r'diffusion\.unet: "tiny" -> "small"\); set them back') as e:
        train.train_diffusion(_config(tmp_path, batch_size=256, unet="small"), resume=True)
    assert "\n" not in str(e.value)
    more = train.train_diffusion(_config(tmp_path, batch_size=256, epochs=2), resume=True)  # more epochs: allowed
    assert more.step == 10 and len(more.losses) == 5


def test_a_finished_unet_whose_state_is_gone_is_not_replaced_silently(tmp_path):
    import shutil

    train.train_diffusion(_config(tmp_path, batch_size=256))
    weights = (tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "run" / "diffusion" / "state")
    with pytest.raises(ClspError, match=r"holds an earlier run \(unet\) that saved no resume state"):
        train.train_diffusion(_config(tmp_path, batch_size=256))
    assert (tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights


def test_non_finite_loss_stops_and_keeps_no_broken_state(tmp_path):
    with pytest.raises(
        ClspError, match=r"loss became (nan|inf) at step \d+; \S+ was not saved yet: lower diffusion\.lr"
    ):
        train.train_diffusion(_config(tmp_path, batch_size=256, lr=1e30, warmup_steps=0, grad_clip=1e30))


def test_resume_without_state(tmp_path):
    with pytest.raises(ClspError, match="no saved state"):
        train.train_diffusion(_config(tmp_path), resume=True)


def test_batch_larger_than_data(tmp_path):
    with pytest.raises(ClspError, match="lower diffusion.batch_size"):
        train.train_diffusion(_config(tmp_path, batch_size=5000))


def test_bf16_mixed_precision(tmp_path):
    # 5 steps of 64 of digits' 359 training images at test_fraction 0.8: a CPU without bf16 units emulates bf16 many
    # times slower than fp32
    result = train.train_diffusion(_config(tmp_path, {"test_fraction": 0.8}, batch_size=64, mixed_precision="bf16"))
    assert result.step == 5 and np.isfinite(result.losses).all()
    assert all(w.dtype == torch.float32 for w in _weights(tmp_path / "run").values())
