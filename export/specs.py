"""What gets exported: a module, its named inputs and outputs (dim 0 always the dynamic batch) and its facts.

The two models of a run are the interpolating denoiser (``x_t, anchor_t, t, w -> eps``) and the SSL encoder
(``images -> features``). A :class:`ModelSpec` is all an exporter, the metadata sidecar and the parity check
need to know about either.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from clsp.config import Config
from clsp.contrastive.backbones import load_backbone
from clsp.diffusion.sampler import SamplerSettings
from clsp.diffusion.unet import InterpolatingDenoiser, load_trained_unet
from clsp.export.contract import denoiser_contract, encoder_contract
from clsp.export.encoder_source import find_encoder
from clsp.positives.generate import unet_content_hash  # hashes any module's state dict

Kind = Literal["denoiser", "encoder"]
KINDS: tuple[Kind, ...] = ("denoiser", "encoder")

EXAMPLE_BATCH = 2
"""Batch of the example inputs exporters trace with: 0 and 1 would be specialised as constants."""

BATCH = "batch"
"""Name of the dynamic batch dimension in shapes."""


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output; ``shape[0]`` is :data:`BATCH`."""

    name: str
    shape: tuple[int | str, ...]
    dtype: Literal["float32", "int64"]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if dim == BATCH else int(dim) for dim in self.shape)


@dataclass(frozen=True)
class RealInputs:
    """Inputs made from the run's own images by clsp's own preprocessing, exactly as the runtime hands them to the
    model, strides included: ``make(batch, device)`` -> a tuple in the spec's input order. ``source`` names them."""

    source: str
    make: Callable[[int, torch.device], tuple[Tensor, ...]]


@dataclass
class ModelSpec:
    """A module ready to export.

    ``make_inputs(batch, generator)`` draws fresh random example inputs, one distinct tensor per input (the
    ONNX exporter merges inputs that are the same tensor object). ``facts`` go into the metadata and its cache
    key (image size, normalisation, ...); ``record`` goes into the metadata only (e.g. the sampler settings,
    which a non-Python runner needs but which do not change the exported graph). ``real_inputs``, when set, joins
    the random inputs in the parity check (:mod:`clsp.export.real_inputs`).
    """

    kind: Kind
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    make_inputs: Callable[[int, torch.Generator], tuple[Tensor, ...]]
    source_sha256: str
    facts: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)
    real_inputs: RealInputs | None = None

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def device(self) -> torch.device:
        """Where the module's weights are."""
        return next(self.module.parameters()).device

    def example_inputs(self, batch: int = EXAMPLE_BATCH, seed: int = 0) -> tuple[Tensor, ...]:
        """Fresh random inputs for ``batch`` samples: a tuple in :attr:`inputs` order, on the module's device."""
        generator = torch.Generator().manual_seed(seed)
        return tuple(x.to(self.device) for x in self.make_inputs(batch, generator))


def denoiser_spec(denoiser: InterpolatingDenoiser, settings: SamplerSettings, weight: float) -> ModelSpec:
    """The spec of an :class:`InterpolatingDenoiser`: float ``x_t, anchor_t [B,C,H,W]``, int64 ``t [B]``,
    float ``w [B]`` -> float ``eps [B,C,H,W]``. ``settings`` and ``weight`` are recorded for runners."""
    c, h, w = denoiser.sample_shape
    image = (BATCH, c, h, w)
    num_train_timesteps = settings.num_train_timesteps

    def make_inputs(batch: int, g: torch.Generator) -> tuple[Tensor, ...]:
        return (
            torch.randn(batch, c, h, w, generator=g),
            torch.randn(batch, c, h, w, generator=g),
            torch.randint(0, num_train_timesteps, (batch,), generator=g),
            torch.rand(batch, generator=g),
        )

    return ModelSpec(
        kind="denoiser",
        module=denoiser.eval(),
        inputs=(
            TensorSpec("x_t", image, "float32"),
            TensorSpec("anchor_t", image, "float32"),
            TensorSpec("t", (BATCH,), "int64"),
            TensorSpec("w", (BATCH,), "float32"),
        ),
        outputs=(TensorSpec("eps", image, "float32"),),
        make_inputs=make_inputs,
        source_sha256=unet_content_hash(denoiser.unet),
        # The sampler works on (uint8 / 255 - 0.5) / 0.5, i.e. [-1, 1] (images_to_model).
        facts={"image_size": h, "channels": c, "mean": [0.5] * c, "std": [0.5] * c, "num_layers": denoiser.num_layers},
        record=denoiser_contract(settings, weight),
    )


def encoder_spec(encoder: nn.Module, backbone: dict[str, Any]) -> ModelSpec:
    """The spec of an SSL encoder: normalised float ``images [B,C,S,S]`` -> float ``features [B,D]``.

    ``backbone`` is the ``backbone.json`` the SSL run wrote (``in_channels``, ``image_size``, ``mean``, ``std``,
    ``feature_dim``, ``backbone``).
    """
    c, s = int(backbone["in_channels"]), int(backbone["image_size"])

    def make_inputs(batch: int, g: torch.Generator) -> tuple[Tensor, ...]:
        return (torch.randn(batch, c, s, s, generator=g),)

    return ModelSpec(
        kind="encoder",
        module=encoder.eval(),
        inputs=(TensorSpec("images", (BATCH, c, s, s), "float32"),),
        outputs=(TensorSpec("features", (BATCH, int(backbone["feature_dim"])), "float32"),),
        make_inputs=make_inputs,
        source_sha256=unet_content_hash(encoder),
        facts={
            "image_size": s,
            "channels": c,
            "mean": list(backbone["mean"]),
            "std": list(backbone["std"]),
            "backbone": backbone.get("backbone"),
        },
        record=encoder_contract(backbone),
    )


def run_denoiser(cfg: Config) -> InterpolatingDenoiser:
    """The run's trained UNet (``<output_dir>/unet``) as an interpolating denoiser with ``positives.num_layers``."""
    return InterpolatingDenoiser(load_trained_unet(cfg), cfg.positives.num_layers).eval()


def run_encoder(cfg: Config, run: Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained SSL encoder that :func:`~clsp.export.encoder_source.find_encoder` picks (``run``'s, the run's
    own ``<output_dir>/ssl`` or a demo's result) and its ``backbone.json``."""
    return load_backbone(find_encoder(cfg, run).folder)
