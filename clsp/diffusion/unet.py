"""UNet presets on ``diffusers.UNet2DModel`` and the feature-interpolating denoiser (method.md 1.1, 2.1)."""

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from clsp.atomic import cached_file_sha256, file_sha256
from clsp.config import Config
from clsp.errors import ClspError
from clsp.json_files import json_field, read_json_object

# The DDPM CIFAR-10 network (method.md 1.1) as diffusers expresses it: these are the settings of
# google/ddpm-cifar10-32. Deviations from the reference port, kept so that pretrained diffusers
# checkpoints load into the same shapes: the downsampling conv pads (0,1,0,1) instead of 1 on every
# side, GroupNorm eps is 1e-6, weights use PyTorch's default init, and there is no unused projector.
_DDPM_TIME = {"flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0, "norm_eps": 1e-6}

PRESETS: dict[str, dict[str, Any]] = {
    "ddpm-cifar": {
        **_DDPM_TIME,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 2,
        "attention_head_dim": None,  # one head, as in the reference
        "norm_num_groups": 32,
        "dropout": 0.1,
    },
    # method.md's STL-10 network: ch_mult 1,2,3,4, three res blocks per level, attention at 32, 16, 8 px.
    "ddpm-stl64": {
        **_DDPM_TIME,
        "block_out_channels": (128, 256, 384, 512),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 3,
        "attention_head_dim": None,
        "norm_num_groups": 32,
        "dropout": 0.15,
    },
    # Not in the paper: sized so that the digits demo (16 px) trains on two CPU cores in minutes. One res block
    # per level and attention only in the 4 px mid block make a training step ~3x cheaper than two blocks with
    # attention at 8 px as well, for the same channels.
    "small": {
        **_DDPM_TIME,
        "block_out_channels": (32, 64, 64),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "attention_head_dim": None,
        "norm_num_groups": 8,
        "dropout": 0.0,
    },
    # Not in the paper: for tests, a forward pass takes milliseconds.
    "tiny": {
        **_DDPM_TIME,
        "block_out_channels": (16, 32),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "attention_head_dim": None,
        "norm_num_groups": 4,
        "dropout": 0.0,
    },
}


SHIPPED_DIR = Path(__file__).parent / "pretrained"
SHIPPED: dict[str, str] = {
    "digits-pretrained": "the `small` preset trained on the embedded digits by `clsp diffusion train`",
    "fashion-mnist-pretrained": "the `small` preset trained on Fashion-MNIST's 60,000 training images (28 px)",
}
"""Trained UNets shipped inside the package (``diffusion.pretrained``), each a diffusers folder beside a
``provenance.json`` (the command and config that trained it, the SHA-256 of its weights, its positive quality)."""
SHIPPED_PROVENANCE = "provenance.json"
SHIPPED_WEIGHTS = "diffusion_pytorch_model.safetensors"


def shipped_provenance(name: str) -> dict[str, Any]:
    """The ``provenance.json`` of shipped UNet ``name``, after checking its weights and its ``config.json`` (which
    decides the architecture the weights run in) against the recorded SHA-256s."""
    folder = SHIPPED_DIR / name
    fix = "reinstall clsp"
    provenance = read_json_object(folder / SHIPPED_PROVENANCE, fix)
    for file_name, recorded in ((SHIPPED_WEIGHTS, "weights_sha256"), ("config.json", "config_sha256")):
        path = folder / file_name
        if not path.is_file():
            raise ClspError(f"{path}: the shipped UNet {name!r} is missing a file; {fix}")
        if file_sha256(path) != json_field(provenance, recorded, str, folder / SHIPPED_PROVENANCE, fix):
            raise ClspError(f"{path}: SHA-256 differs from {SHIPPED_PROVENANCE} (the file was changed); {fix}")
    return provenance


def build_unet(preset: str, image_size: int, channels: int, dropout: float | None = None) -> UNet2DModel:
    """A freshly initialised UNet of ``preset`` for ``channels``-channel images of ``image_size`` px.

    ``dropout`` None keeps the preset's value.
    """
    if preset not in PRESETS:
        raise ClspError(f"diffusion.unet: unknown preset {preset!r}; use one of {sorted(PRESETS)} or a UNet folder")
    settings = dict(PRESETS[preset])
    factor = 2 ** (len(settings["block_out_channels"]) - 1)
    if image_size % factor:
        raise ClspError(
            f"data.image_size {image_size} is not divisible by {factor}, which the {preset!r} UNet needs; "
            f"set data.image_size to a multiple of {factor}"
        )
    if dropout is not None:
        settings["dropout"] = dropout
    return UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels, **settings)


def unet_folder(path: str | Path) -> Path:
    """The folder holding a trained UNet's ``config.json`` and weights: a local diffusers ``UNet2DModel`` folder, a
    pipeline folder's ``unet/``, or a shipped UNet by name (:data:`SHIPPED`, checked against its recorded SHA-256s)."""
    if str(path) in SHIPPED:
        shipped_provenance(str(path))
        path = SHIPPED_DIR / str(path)
    path = Path(path)
    if not path.is_dir():
        raise ClspError(
            f"diffusion.unet: {str(path)!r} is neither a preset ({', '.join(PRESETS)}) nor an existing folder; "
            "train one with `clsp diffusion train` or fix the path"
        )
    if not (path / "config.json").is_file() and (path / "unet" / "config.json").is_file():
        path = path / "unet"
    config_file = path / "config.json"
    try:
        class_name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        raise ClspError(f"{config_file}: missing or not a JSON object; point diffusion.unet at a UNet folder") from None
    if class_name != "UNet2DModel":
        raise ClspError(
            f"{config_file}: holds a {class_name!r}, not a UNet2DModel; point diffusion.unet at a UNet2DModel folder"
        )
    return path


def unet_files_sha256(path: str | Path) -> str:
    """SHA-256 over the files of the trained UNet :func:`unet_folder` finds (``config.json`` and the weights): which
    model a run samples with, read without loading it."""
    folder = unet_folder(path)
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.name == "config.json" or file.suffix in (".safetensors", ".bin"):
            digest.update(f"{file.name}:{cached_file_sha256(file)}".encode())
    return digest.hexdigest()


def load_pretrained_unet(path: str | Path) -> UNet2DModel:
    """Load the trained UNet :func:`unet_folder` finds (a folder, a pipeline's ``unet/`` or a shipped name)."""
    path = unet_folder(path)
    try:
        return UNet2DModel.from_pretrained(path)
    except (OSError, ValueError, RuntimeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClspError(f"{path}: cannot load the UNet weights ({first_line})") from None


def load_unet(name_or_path: str, image_size: int, channels: int, dropout: float | None = None) -> UNet2DModel:
    """A preset built for the data, or a saved UNet2DModel folder checked against the data's shape.

    ``dropout`` (None: the preset's) applies to presets only; a saved UNet keeps its own.
    """
    if name_or_path in PRESETS:
        return build_unet(name_or_path, image_size, channels, dropout)
    unet = load_pretrained_unet(name_or_path)
    check_unet_matches(unet, image_size, channels, str(name_or_path))
    return unet


def trained_unet_source(cfg: Config) -> str:
    """Where the UNet a run samples with comes from: ``<run.output_dir>/unet`` once trained there, else
    ``diffusion.pretrained`` (a shipped name or a folder), else a ``diffusion.unet`` folder."""
    trained = cfg.layout.unet
    if trained.is_dir():
        return str(trained)
    if cfg.diffusion.pretrained is not None:
        return cfg.diffusion.pretrained
    if cfg.diffusion.unet not in PRESETS:
        return cfg.diffusion.unet
    raise ClspError(
        f"no trained UNet in {trained}; run `clsp diffusion train` first, or set diffusion.pretrained to a trained "
        f"UNet ({', '.join(SHIPPED)} or a folder)"
    )


def load_trained_unet(cfg: Config) -> UNet2DModel:
    """The UNet a run samples with (see :func:`trained_unet_source`), checked against the data's image shape."""
    source = trained_unet_source(cfg)
    unet = load_pretrained_unet(source)
    if cfg.diffusion.pretrained is not None and source == cfg.diffusion.pretrained:
        from clsp.data import load_images

        images = load_images(cfg.data, cfg.data.train_split)
        size = cfg.diffusion.image_size or images.image_shape[0]
        check_unet_matches(unet, size, images.image_shape[2], f"diffusion.pretrained={source}")
    return unet


def _sample_size(unet: UNet2DModel) -> int:
    size = unet.config.sample_size
    return size if isinstance(size, int) else size[0]


def check_unet_matches(unet: UNet2DModel, image_size: int, channels: int, source: str) -> None:
    """Raise ClspError when ``unet`` was made for images of another channel count or size."""
    cfg = unet.config
    if cfg.in_channels != channels or cfg.out_channels != channels:
        raise ClspError(f"{source}: the UNet takes {cfg.in_channels}-channel images but the data has {channels}")
    size = _sample_size(unet)
    if size != image_size:
        raise ClspError(
            f"{source}: the UNet was made for {size} px images but the data is {image_size} px; "
            f"set data.image_size={size}"
        )


class InterpolatingDenoiser(nn.Module):
    """The CLSP denoiser: a UNet whose bottleneck (and optionally deepest skips) blends towards an anchor.

    ``forward(x_t, anchor_t, t, w)`` runs the down path and mid block once over the stacked batch
    ``[x_t; anchor_t]``, blends the mid-block output ``h`` as ``w*h + (1-w)*h_anchor`` (and, for
    ``num_layers = L > 1``, the ``L-1`` deepest skip tensors the same way), then runs the up path with the
    sample's own skips. ``w = 1`` reproduces ``unet(x_t, t).sample``.
    """

    def __init__(self, unet: UNet2DModel, num_layers: int = 1) -> None:
        super().__init__()
        cfg = unet.config
        if cfg.class_embed_type is not None or cfg.num_class_embeds is not None:
            raise ClspError("diffusion.unet: class-conditional UNets are not supported; use an unconditional one")
        num_skips = 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in unet.down_blocks)
        if not 1 <= num_layers <= num_skips + 1:
            raise ClspError(
                f"positives.num_layers={num_layers}: this UNet has {num_skips} skip tensors, so use 1..{num_skips + 1}"
            )
        self.unet = unet
        self.num_layers = num_layers

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images this denoiser takes."""
        return (self.unet.config.in_channels, _sample_size(self.unet), _sample_size(self.unet))

    def forward(self, x_t: Tensor, anchor_t: Tensor, t: Tensor, w: Tensor) -> Tensor:
        """Predict the noise of ``x_t``.

        Args:
            x_t: float ``[B, C, H, W]``, the current noisy sample.
            anchor_t: float ``[B, C, H, W]``, the anchor noised to the same timestep.
            t: int64 ``[B]``, timesteps in ``[0, T)``.
            w: float ``[B]`` in ``[0, 1]``, the weight of the sample's own features.

        Returns:
            float ``[B, C, H, W]``, the predicted noise.
        """
        unet = self.unet
        batch = x_t.shape[0]

        # 1. time: one embedding, shared by the sample and its anchor
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))
        emb2 = torch.cat([emb, emb])

        # 2. down path and mid block, once over the stacked batch
        sample = torch.cat([x_t, anchor_t])
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        skip_sample = sample
        sample = unet.conv_in(sample)
        skips: tuple[Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            if hasattr(block, "skip_conv"):
                sample, res, skip_sample = block(hidden_states=sample, temb=emb2, skip_sample=skip_sample)
            else:
                sample, res = block(hidden_states=sample, temb=emb2)
            skips += res
        if unet.mid_block is not None:
            sample = unet.mid_block(sample, emb2)

        # 3. blend: w weighs the sample's own features, 1 - w the anchor's
        w = w.to(sample.dtype).view(batch, 1, 1, 1)

        def blend(h: Tensor) -> Tensor:
            return w * h[:batch] + (1 - w) * h[batch:]

        sample = blend(sample)
        deep = len(skips) - (self.num_layers - 1)
        skips = tuple(s[:batch] for s in skips[:deep]) + tuple(blend(s) for s in skips[deep:])

        # 4. up path on the sample's own (or blended) skips
        skip_sample = None
        for block in unet.up_blocks:
            res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            if hasattr(block, "skip_conv"):
                sample, skip_sample = block(sample, res, emb, skip_sample)
            else:
                sample = block(sample, res, emb)

        # 5. post-process
        sample = unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))
        if skip_sample is not None:
            sample = sample + skip_sample
        if unet.config.time_embedding_type == "fourier":
            sample = sample / t.reshape(batch, 1, 1, 1)
        return sample
