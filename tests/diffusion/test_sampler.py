import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clsp.config import load_config
from clsp.diffusion import sampler
from clsp.diffusion.sampler import (
    SamplerSettings,
    alphas_cumprod,
    ddim_step,
    images_to_model,
    interpolation_step,
    make_scheduler,
    model_to_images,
    sample_positives,
    sampling_precision,
)
from clsp.diffusion.unet import InterpolatingDenoiser, build_unet
from clsp.errors import ClspError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _settings(**changes) -> SamplerSettings:
    base = {
        "num_steps": 100,
        "eta": 0.1,
        "solver": "ddim",
        "precision": "fp32",
        "num_train_timesteps": 1000,
        "beta_start": 1e-4,
        "beta_end": 0.02,
    }
    return SamplerSettings(**{**base, **changes})


class ToyDenoiser:
    """A fixed smooth function of all four inputs that records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, x_t, anchor_t, t, w):
        self.calls.append((x_t.clone(), anchor_t.clone(), t.clone(), w.clone()))
        wv = w.view(-1, 1, 1, 1)
        return torch.tanh(0.7 * x_t - 0.4 * anchor_t) * wv + 1e-3 * t.view(-1, 1, 1, 1) * (1 - wv)


def _alpha_bar_float64(t: int) -> float:
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    return float(np.cumprod(1 - betas)[t]) if t >= 0 else 1.0


@pytest.fixture(scope="module")
def tiny_denoiser() -> InterpolatingDenoiser:
    torch.manual_seed(0)
    return InterpolatingDenoiser(build_unet("tiny", 16, 1).eval())


def test_grid_is_the_trailing_spec_grid():
    assert make_scheduler(_settings()).timesteps.tolist() == list(range(999, 0, -10))
    assert make_scheduler(_settings(num_steps=200)).timesteps.tolist() == list(range(999, 0, -5))


@pytest.mark.parametrize("eta", [0.0, 0.1])
@pytest.mark.parametrize(("t", "t_prev"), [(999, 989), (509, 499), (9, -1)])
def test_one_step_is_the_ddim_formula(eta, t, t_prev):
    g = torch.Generator().manual_seed(3)
    x_t, anchor, anchor_noise, z = (torch.randn(2, 3, 8, 8, generator=g) for _ in range(4))
    anchor = anchor.clamp(-1, 1)
    w = torch.tensor([0.1, 0.6])
    denoiser = ToyDenoiser()
    out = interpolation_step(denoiser, make_scheduler(_settings(eta=eta)), x_t, anchor, t, w, anchor_noise, z, eta)

    # the spec (method.md 2.2-2.3) by hand, in float64
    x, a0, e_a, zz = (v.double() for v in (x_t, anchor, anchor_noise, z))
    ab, ab_prev = _alpha_bar_float64(t), _alpha_bar_float64(t_prev)
    anchor_t = ab**0.5 * a0 + (1 - ab) ** 0.5 * e_a
    seen_x, seen_anchor, seen_t, seen_w = denoiser.calls[0]
    assert torch.allclose(seen_anchor.double(), anchor_t, atol=1e-5)
    assert torch.equal(seen_x, x_t) and seen_t.tolist() == [t, t] and torch.equal(seen_w, w)
    eps = denoiser(x_t, seen_anchor, seen_t, w).double()
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
    sigma = eta * ((1 - ab / ab_prev) * (1 - ab_prev) / (1 - ab)) ** 0.5
    expected = ab_prev**0.5 * x0 + (1 - ab_prev - sigma**2) ** 0.5 * eps + sigma * zz
    assert (out.double() - expected).abs().max() < 1e-5
    if t_prev < 0:
        assert (out.double() - x0).abs().max() < 1e-5


@pytest.mark.parametrize(("num_train_timesteps", "beta_start", "beta_end"), [(1000, 1e-4, 0.02), (400, 3e-4, 0.05)])
def test_one_alpha_bar_is_diffusers_schedulers_in_float32_and_the_product_in_float64(
    num_train_timesteps, beta_start, beta_end
):
    ours = alphas_cumprod(num_train_timesteps, beta_start, beta_end)
    for solver in ("ddim", "dpm-solver++"):
        settings = _settings(solver=solver, num_steps=10, num_train_timesteps=num_train_timesteps)
        settings = replace(settings, beta_start=beta_start, beta_end=beta_end)
        assert torch.equal(ours, make_scheduler(settings).alphas_cumprod), solver
    betas = [beta_start + (beta_end - beta_start) * i / (num_train_timesteps - 1) for i in range(num_train_timesteps)]
    products = [
        math.prod(1 - b for b in betas[: t + 1]) for t in (0, 1, num_train_timesteps // 2, num_train_timesteps - 1)
    ]
    wide = alphas_cumprod(num_train_timesteps, beta_start, beta_end, torch.float64)
    picked = wide[[0, 1, num_train_timesteps // 2, num_train_timesteps - 1]].tolist()
    assert picked == pytest.approx(products, rel=1e-12)  # by hand, in Python floats
    assert (wide - ours.double()).abs().max() < 1e-6  # what float32 costs


@pytest.mark.parametrize("eta", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("num_steps", [10, 100])
def test_written_out_ddim_step_is_diffusers_step_bit_for_bit(eta, num_steps):
    scheduler = make_scheduler(_settings(num_steps=num_steps, eta=eta))
    g = torch.Generator().manual_seed(num_steps)
    for t in scheduler.timesteps.tolist():
        x_t, eps, z = (torch.randn(4, 3, 8, 8, generator=g) for _ in range(3))
        ours = ddim_step(scheduler, eps, t, x_t, eta, z)
        theirs = scheduler.step(eps, t, x_t, eta=eta, variance_noise=z).prev_sample
        assert torch.equal(ours, theirs), t


def test_loop_visits_every_step_and_clips():
    denoiser = ToyDenoiser()
    anchors = torch.rand(3, 1, 4, 4) * 2 - 1
    out = sample_positives(denoiser, anchors, 0.25, torch.arange(3), torch.zeros(3, dtype=torch.long), 0, _settings())
    assert [c[2][0].item() for c in denoiser.calls] == list(range(999, 0, -10))
    assert all(torch.equal(c[3], torch.full((3,), 0.25)) for c in denoiser.calls)
    assert out.shape == anchors.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("mode", ["fresh", "shared"])
def test_anchor_is_renoised_from_q_with_fresh_or_the_samples_own_noise(mode):
    denoiser = ToyDenoiser()
    anchors = torch.rand(2, 1, 4, 4, dtype=torch.float64).float() * 2 - 1
    ids = (torch.arange(2), torch.zeros(2, dtype=torch.long), 3)
    sample_positives(denoiser, anchors, 0.1, *ids, _settings(num_steps=10, anchor_noise=mode))
    x_T = denoiser.calls[0][0].double()
    noises = []
    for _, anchor_t, t, _ in denoiser.calls:
        a = _alpha_bar_float64(int(t[0]))
        noises.append((anchor_t.double() - a**0.5 * anchors.double()) / (1 - a) ** 0.5)
    if mode == "shared":
        assert all((n - x_T).abs().max() < 1e-5 for n in noises)
    else:  # a new draw every step, none of them the sample's x_T
        assert all((n - x_T).abs().max() > 0.5 for n in noises)
        assert all((a - b).abs().max() > 0.5 for a, b in itertools.pairwise(noises))


def test_same_seeds_same_positives_whatever_the_batching(tiny_denoiser):
    settings = _settings(num_steps=20)
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(6, 1, 16, 16, generator=g) * 2 - 1
    images = torch.tensor([0, 1, 2, 3, 4, 5])
    candidates = torch.tensor([0, 1, 0, 1, 0, 1])
    whole = sample_positives(tiny_denoiser, anchors, 0.1, images, candidates, 5, settings)
    order = torch.tensor([5, 2, 0, 3, 1, 4])
    parts = [
        sample_positives(tiny_denoiser, anchors[i], 0.1, images[i], candidates[i], 5, settings)
        for i in (order[:2], order[2:])
    ]
    reordered = torch.empty_like(whole)
    reordered[order] = torch.cat(parts)
    # batch size changes the float summation order of the convolutions, nothing else
    assert (reordered - whole).abs().max() < 1e-4
    assert np.abs(model_to_images(reordered).astype(int) - model_to_images(whole)).max() <= 1
    assert (whole[0] - whole[1]).abs().max() > 0.1  # another candidate is another sample


def test_bf16_is_close_to_fp32(tiny_denoiser):
    anchors = torch.rand(4, 1, 16, 16) * 2 - 1
    args = (anchors, 0.1, torch.arange(4), torch.zeros(4, dtype=torch.long), 0)
    fp32 = sample_positives(tiny_denoiser, *args, _settings(num_steps=20))
    bf16 = sample_positives(tiny_denoiser, *args, _settings(num_steps=20, precision="bf16"))
    assert 0 < (bf16 - fp32).abs().mean() < 0.05


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_is_bf16_only_where_the_device_has_bf16_units(monkeypatch, capsys, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": native})
    cfg = load_config(REPO_ROOT / "configs/digits.yaml", ["positives.precision=auto"])
    assert SamplerSettings.from_config(cfg, "cpu").precision == ("bf16" if native else "fp32")
    fp32 = load_config(REPO_ROOT / "configs/digits.yaml", ["positives.precision=fp32"])
    assert SamplerSettings.from_config(fp32, "cpu").precision == "fp32"
    assert capsys.readouterr().err == ""


def test_explicit_bf16_without_bf16_units_is_kept_with_one_warning(monkeypatch, capsys):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    sampler._warn_emulated_bf16.cache_clear()  # warned once per process: start this test unwarned
    assert sampling_precision("bf16", torch.device("cpu")) == "bf16"
    assert sampling_precision("bf16", torch.device("cpu")) == "bf16"
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "positives.precision=bf16 on a cpu without bf16 units" in err and "set positives.precision to auto" in err


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_dpm_solver_uses_fewer_steps_with_the_same_interpolation():
    denoiser = ToyDenoiser()
    anchors = torch.rand(2, 1, 4, 4) * 2 - 1
    settings = _settings(num_steps=15, solver="dpm-solver++")
    out = sample_positives(denoiser, anchors, 0.1, torch.arange(2), torch.zeros(2, dtype=torch.long), 0, settings)
    assert len(denoiser.calls) == 15 and denoiser.calls[0][2][0] == 999
    assert out.shape == anchors.shape and out.abs().max() <= 1
    first_anchor = denoiser.calls[0][1]
    assert not torch.equal(first_anchor, denoiser.calls[1][1])  # re-noised every step


@pytest.mark.parametrize(
    ("anchors", "weight", "match"),
    [
        (torch.zeros(2, 16, 16), 0.1, r"float \[B,C,H,W\]"),
        (torch.zeros(2, 1, 16, 16, dtype=torch.uint8), 0.1, "images_to_model"),
        (torch.zeros(2, 3, 16, 16), 0.1, "UNet takes"),
        (torch.full((2, 1, 16, 16), 2.0), 0.1, r"\[-1,1\]"),
        (torch.zeros(2, 1, 16, 16), 1.5, r"w \(positives.weight\) must lie in \[0,1\]"),
        (torch.zeros(2, 1, 16, 16), torch.tensor([0.5, -0.1]), r"must lie in \[0,1\]"),
        (torch.zeros(2, 1, 16, 16), torch.tensor([0.5, 0.5, 0.5]), "one value per anchor"),
    ],
)
def test_bad_input(tiny_denoiser, anchors, weight, match):
    with pytest.raises(ClspError, match=match):
        sample_positives(
            tiny_denoiser,
            anchors,
            weight,
            torch.arange(2),
            torch.zeros(2, dtype=torch.long),
            0,
            _settings(),
            tiny_denoiser.sample_shape,
        )


def test_steps_must_divide_timesteps():
    with pytest.raises(ClspError, match="must divide"):
        make_scheduler(_settings(num_steps=300))


@pytest.mark.parametrize("solver", ["ddim", "dpm-solver++"])
def test_more_steps_than_timesteps_are_refused(solver: str):
    with pytest.raises(ClspError, match="positives.num_steps=2000 exceeds diffusion.num_train_timesteps=1000"):
        _settings(num_steps=2000, solver=solver).check()


def test_image_conversions():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    x = images_to_model(images)
    assert x.shape == (1, 1, 16, 16) and x.min() == -1 and x.max() == 1
    back = model_to_images(x)
    assert back.dtype == np.uint8 and back.shape == images.shape
    assert np.abs(back.astype(int) - images).max() <= 1  # truncation, as the reference casts
    assert model_to_images(torch.tensor([[[[-3.0, 0.999, 3.0]]]])).ravel().tolist() == [0, 254, 255]
    with pytest.raises(ClspError, match="uint8"):
        images_to_model(images.astype(np.float32))
