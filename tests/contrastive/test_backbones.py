"""Backbones (method.md 3.2): stems, feature sizes, channel counts, projector, safetensors round trip."""

import pytest
import torch
from torch import nn

from clsp.contrastive.backbones import Projector, build_backbone, load_backbone, save_backbone


@pytest.mark.parametrize(("stem", "has_maxpool"), [("cifar", False), ("stl", True)])
def test_resnet18_stems(stem, has_maxpool):
    net, dim = build_backbone("resnet18", stem, in_channels=3)
    assert dim == 512
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.bias) == ((3, 3), (1, 1), None)
    assert isinstance(net.maxpool, nn.MaxPool2d) == has_maxpool
    assert isinstance(net.fc, nn.Identity)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_stl_stem_runs_stages_at_32_16_8_4_for_64px():
    net, _ = build_backbone("resnet18", "stl")
    sizes = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        layer.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    net.eval()(torch.randn(1, 3, 64, 64))
    assert sizes == [32, 16, 8, 4]


def test_resnet50_and_small_cnn_take_any_channel_count():
    net, dim = build_backbone("resnet50", "cifar", in_channels=1)
    assert dim == 2048 and net.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 2048)
    net, dim = build_backbone("small-cnn", in_channels=1)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, dim)


def test_projector_has_no_batchnorm():
    p = Projector(512, 4096, 256)
    assert [type(m) for m in p] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (p[0].in_features, p[0].out_features, p[2].out_features) == (512, 4096, 256)


def test_save_and_load_round_trip(tmp_path):
    net, dim = build_backbone("small-cnn", in_channels=3)
    net(torch.randn(8, 3, 16, 16))  # moves the BatchNorm running statistics away from their initial values
    save_backbone(net, tmp_path, {"backbone": "small-cnn", "stem": "cifar", "in_channels": 3, "feature_dim": dim})
    loaded, spec = load_backbone(tmp_path)
    assert spec["feature_dim"] == dim and not loaded.training
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net.eval()(x), rtol=0, atol=0)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="resnet18"):
        build_backbone("vgg11")


def _saved(tmp_path):
    net, dim = build_backbone("small-cnn", in_channels=1)
    save_backbone(net, tmp_path, {"backbone": "small-cnn", "stem": "cifar", "in_channels": 1, "feature_dim": dim})
    return tmp_path


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / "backbone.json").unlink(), r"backbone.json: missing"),
        (lambda d: (d / "backbone.json").write_text("{not json"), r"backbone.json: not valid JSON"),
        (
            lambda d: (d / "backbone.json").write_text('{"backbone": "vgg11", "stem": "cifar", "in_channels": 1}'),
            r"backbone 'vgg11'",
        ),
        (
            lambda d: (d / "backbone.json").write_text('{"backbone": "resnet18", "stem": "cifar", "in_channels": 1}'),
            r"holds another network than the resnet18",
        ),
        (
            lambda d: (d / "backbone.json").write_text(
                '{"backbone": "small-cnn", "stem": "cifar", "in_channels": "1"}'
            ),
            r"'in_channels' is \"1\"",
        ),
        (lambda d: (d / "backbone.safetensors").unlink(), r"backbone.safetensors: missing"),
        (
            lambda d: (d / "backbone.safetensors").write_bytes((d / "backbone.safetensors").read_bytes()[:500]),
            r"not a readable safetensors file",
        ),
        (
            lambda d: (d / "backbone.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + b"{}"),
            r"not a readable safetensors file",
        ),
    ],
)
def test_every_damaged_backbone_file_is_one_line(tmp_path, damage, match):
    from clsp.errors import ClspError

    damage(_saved(tmp_path))
    with pytest.raises(ClspError, match=match) as e:
        load_backbone(tmp_path)
    assert "\n" not in str(e.value)
