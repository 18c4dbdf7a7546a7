import json

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from clsp.diffusion.unet import PRESETS, InterpolatingDenoiser, build_unet, load_pretrained_unet, load_unet
from clsp.errors import ClspError

# (preset, image size, channels): the sizes each preset is used at.
SHAPES = {"tiny": (16, 1), "small": (16, 1), "ddpm-cifar": (32, 3), "ddpm-stl64": (64, 3)}


def _inputs(size: int, channels: int, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g)
    anchor = torch.randn(batch, channels, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, anchor, t


@pytest.fixture(scope="module")
def unets() -> dict[str, UNet2DModel]:
    torch.manual_seed(0)
    return {name: build_unet(name, *SHAPES[name]).eval() for name in PRESETS}


def test_every_preset_has_a_shape():
    assert set(SHAPES) == set(PRESETS)


def test_ddpm_cifar_is_the_ddpm_network(unets):
    unet = unets["ddpm-cifar"]
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(35.7e6, rel=0.01)
    assert unet.config.block_out_channels == (128, 256, 256, 256)
    assert unet.config.dropout == 0.1


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("num_layers", [1, 2])
@torch.no_grad()
def test_weight_one_is_the_plain_unet(unets, name, num_layers):
    unet = unets[name]
    batch = 1 if name == "ddpm-stl64" else 2  # 90 GFLOP per image
    x, anchor, t = _inputs(*SHAPES[name], batch=batch)
    out = InterpolatingDenoiser(unet, num_layers)(x, anchor, t, torch.ones(batch))
    assert (out - unet(x, t).sample).abs().max() < 1e-5


def _hooked_reference(unet: UNet2DModel, x, anchor, t, w, num_layers: int) -> torch.Tensor:
    """Two full passes of a plain UNet: record the anchor's features with hooks, then blend them into x's pass."""
    modules = [unet.conv_in, *unet.down_blocks]
    recorded: dict[str, list] = {"skips": [], "mid": []}

    def skips_of(module, output):
        return [output] if module is unet.conv_in else list(output[1])

    def record(module, args, output):
        recorded["skips"].append(skips_of(module, output))

    def record_mid(module, args, output):
        recorded["mid"].append(output)

    handles = [m.register_forward_hook(record) for m in modules] + [unet.mid_block.register_forward_hook(record_mid)]
    unet(anchor, t)
    for h in handles:
        h.remove()
    anchor_skips = [s for group in recorded["skips"] for s in group]
    wv = w.view(-1, 1, 1, 1)
    blend_from = len(anchor_skips) - (num_layers - 1)
    position = {"next": 0}

    def blend_skips(module, args, output):
        start = position["next"]
        skips = skips_of(module, output)
        position["next"] += len(skips)
        new = [
            wv * s + (1 - wv) * anchor_skips[start + i] if start + i >= blend_from else s for i, s in enumerate(skips)
        ]
        return new[0] if module is unet.conv_in else (output[0], tuple(new))

    def blend_mid(module, args, output):
        return wv * output + (1 - wv) * recorded["mid"][0]

    handles = [m.register_forward_hook(blend_skips) for m in modules]
    handles.append(unet.mid_block.register_forward_hook(blend_mid))
    try:
        return unet(x, t).sample
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("name", ["tiny", "small", "ddpm-cifar"])
@pytest.mark.parametrize("num_layers", [1, 2, 4])
@torch.no_grad()
def test_blend_matches_hooked_two_pass_reference(unets, name, num_layers):
    unet = unets[name]
    x, anchor, t = _inputs(*SHAPES[name], batch=3, seed=1)
    w = torch.tensor([0.0, 0.1, 0.7])
    out = InterpolatingDenoiser(unet, num_layers)(x, anchor, t, w)
    ref = _hooked_reference(unet, x, anchor, t, w, num_layers)
    assert (out - ref).abs().max() < 1e-5
    assert (out - unet(x, t).sample).abs().max() > 1e-3  # the blend does change the prediction


@torch.no_grad()
def test_more_layers_blend_more(unets):
    unet = unets["tiny"]
    x, anchor, t = _inputs(16, 1)
    w = torch.full((2,), 0.2)
    one = InterpolatingDenoiser(unet, 1)(x, anchor, t, w)
    all_skips = InterpolatingDenoiser(unet, 1 + 4)(x, anchor, t, w)
    assert (one - all_skips).abs().max() > 1e-4


def test_num_layers_out_of_range(unets):
    with pytest.raises(ClspError, match="num_layers=6"):
        InterpolatingDenoiser(unets["tiny"], 6)  # tiny has 4 skip tensors


def test_bad_image_size_for_preset():
    with pytest.raises(ClspError, match="divisible by 8"):
        build_unet("ddpm-cifar", 20, 3)


@pytest.mark.parametrize("safetensors", [True, False])
def test_saved_unet_round_trips(tmp_path, unets, safetensors):
    unets["tiny"].save_pretrained(tmp_path / "unet", safe_serialization=safetensors)
    loaded = load_unet(str(tmp_path / "unet"), 16, 1)
    x, _, t = _inputs(16, 1)
    with torch.no_grad():
        assert torch.equal(loaded(x, t).sample, unets["tiny"](x, t).sample)
    assert bool(list((tmp_path / "unet").glob("*.safetensors"))) == safetensors


def test_pipeline_folder_uses_its_unet(tmp_path, unets):
    unets["tiny"].save_pretrained(tmp_path / "pipe" / "unet")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    assert isinstance(load_pretrained_unet(tmp_path / "pipe"), UNet2DModel)


def test_saved_unet_of_other_shape(tmp_path, unets):
    unets["tiny"].save_pretrained(tmp_path / "unet")
    with pytest.raises(ClspError, match="3"):
        load_unet(str(tmp_path / "unet"), 16, 3)
    with pytest.raises(ClspError, match="data.image_size=16"):
        load_unet(str(tmp_path / "unet"), 32, 1)


def test_missing_unet_folder(tmp_path):
    with pytest.raises(ClspError, match="neither a preset"):
        load_unet(str(tmp_path / "nope"), 16, 1)


def test_folder_without_unet(tmp_path):
    with pytest.raises(ClspError, match="config.json"):
        load_unet(str(tmp_path), 16, 1)


def test_folder_with_another_model(tmp_path):
    DDIMScheduler().save_pretrained(tmp_path)  # writes scheduler_config.json
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ClspError, match="not a UNet2DModel"):
        load_unet(str(tmp_path), 16, 1)


def test_unet_folder_with_broken_weights(tmp_path, unets):
    unets["tiny"].save_pretrained(tmp_path)
    for f in tmp_path.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    with pytest.raises(ClspError, match="cannot load"):
        load_unet(str(tmp_path), 16, 1)
