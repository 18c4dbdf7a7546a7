"""Encoders (method.md 3.2): torchvision ResNets with the CIFAR or STL stem, a small CNN for CPUs, the projector,
and the safetensors export that :func:`load_backbone` reads back without any of the training code."""

import json
from pathlib import Path
from typing import Any, Literal

import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

BACKBONES = ("resnet18", "resnet50", "small-cnn")
WEIGHTS_FILE = "backbone.safetensors"
CONFIG_FILE = "backbone.json"


def _small_cnn(in_channels: int) -> nn.Sequential:
    # Not in the paper: a 4-layer CNN (~0.4M parameters) so the digits demo trains in minutes on a CPU.
    layers: list[nn.Module] = []
    widths = (32, 64, 128, 256)
    for i, (cin, cout) in enumerate(zip((in_channels, *widths), widths, strict=False)):
        layers += [nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1, bias=False), nn.BatchNorm2d(cout)]
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def build_backbone(name: str, stem: Literal["cifar", "stl"] = "cifar", in_channels: int = 3) -> tuple[nn.Module, int]:
    """An encoder mapping float ``[B, in_channels, H, W]`` to features ``[B, d]``; returns it and ``d``.

    ResNets (random init) get conv1 = 3x3, stride 1, no bias; the ``cifar`` stem drops the max-pool, the ``stl``
    stem keeps it; ``fc`` becomes the identity (d = 512 for ResNet-18, 2048 for ResNet-50).
    """
    if name == "small-cnn":
        return _small_cnn(in_channels), 256
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    net = getattr(torchvision.models, name)(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    if stem == "cifar":
        net.maxpool = nn.Identity()
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


class Projector(nn.Sequential):
    """Linear(d -> hidden), ReLU, Linear(hidden -> out); no BatchNorm, as in the reference."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def save_backbone(backbone: nn.Module, directory: str | Path, spec: dict[str, Any]) -> Path:
    """Write ``backbone.safetensors`` (its state dict) and ``backbone.json`` (``spec``: at least ``backbone``,
    ``stem``, ``in_channels``, ``feature_dim``; plus anything a user needs such as normalisation) into
    ``directory``, each atomically. Returns the weights path."""
    from clsp.atomic import atomic_write, atomic_write_text

    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    weights = atomic_write(
        directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"})
    )
    atomic_write_text(directory / CONFIG_FILE, json.dumps(spec, indent=1))
    return weights


def load_backbone(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load what :func:`save_backbone` wrote: the encoder in eval mode and its spec (``backbone.json``).

    Needs only torch, torchvision and safetensors besides clsp's two file-checking modules. A missing, malformed,
    truncated or mismatched file is one :class:`~clsp.errors.ClspError` line naming it.
    """
    from clsp.errors import ClspError
    from clsp.json_files import json_field, read_json_object

    directory = Path(directory)
    fix = f"point to a folder that `clsp train` finished ({CONFIG_FILE} + {WEIGHTS_FILE}), or train again"
    path = directory / CONFIG_FILE
    spec = read_json_object(path, fix)
    name, stem = json_field(spec, "backbone", str, path, fix), json_field(spec, "stem", str, path, fix)
    if name not in BACKBONES or stem not in ("cifar", "stl"):
        raise ClspError(f"{path}: backbone {name!r} with stem {stem!r} is not one of {BACKBONES} x (cifar, stl); {fix}")
    net, _ = build_backbone(name, stem, json_field(spec, "in_channels", int, path, fix, minimum=1))  # type: ignore[arg-type]
    weights = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device=str(device))
    except FileNotFoundError:
        raise ClspError(f"{weights}: missing; {fix}") from None
    except Exception as e:  # SafetensorError, OSError, ...: truncated, a forged header length, not safetensors
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClspError(f"{weights}: not a readable safetensors file ({reason}); {fix}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise ClspError(f"{weights}: holds another network than the {name} that {CONFIG_FILE} names; {fix}") from None
    return net.to(device).eval(), spec
