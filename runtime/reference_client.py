#!/usr/bin/env python3
"""Reference client for clsp's ONNX exports: numpy, onnxruntime and Pillow only (no torch, no clsp).

It reads nothing but an artifact folder that ``clsp export --onnx`` wrote (``metadata.json`` + ``model.onnx``
under ``<output_dir>/export/onnx/{encoder,denoiser}/``) and does what that ``metadata.json`` states:

    python reference_client.py features RUN/export/onnx/encoder IMAGE_DIR --out features.npy
    python reference_client.py sample RUN/export/onnx/denoiser --anchors anchors.npy --noise noise.npz \\
        --out positives.npy

``features`` turns every image file under IMAGE_DIR (recursively, sorted, hidden files skipped) into float32
``[N, D]`` features, as ``clsp features --backend ort --input IMAGE_DIR`` does. ``sample`` runs the interpolating
DDIM loop on uint8 ``[B, H, W, C]`` anchors with the caller's noise (``.npz`` with ``x_T [B,C,H,W]``,
``anchor_noise [S,B,C,H,W]`` and, when eta > 0, ``z [S,B,C,H,W]``; S = num_steps) and writes uint8
``[B, H, W, C]`` positives. Fed the noise clsp drew, it reproduces clsp's positives.

Copy this file anywhere: it imports nothing from clsp. Errors are one line on stderr, exit status 2.
"""

import argparse
import hashlib
import json
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from PIL import Image, UnidentifiedImageError

METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"


class ContractError(Exception):
    """Input or artifact that does not meet the contract; the message says which file or field, and the fix."""


# ---- the artifact folder ----------------------------------------------------------------------------------------


def load_artifact(directory: str | Path, kind: str) -> tuple[dict[str, Any], Any]:
    """``metadata.json`` of the ONNX ``kind`` ("encoder" or "denoiser") export in ``directory``, and an
    onnxruntime CPU session of its ``model.onnx`` after checking its SHA-256."""
    directory = Path(directory)
    try:
        metadata = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ContractError(
            f"{directory / METADATA_FILE}: unreadable ({type(e).__name__}); run `clsp export CONFIG --onnx --resume`"
        ) from None
    if not isinstance(metadata, dict):
        raise ContractError(f"{directory / METADATA_FILE}: not a JSON object; run `clsp export CONFIG --onnx --resume`")
    if metadata.get("format") != "onnx" or metadata.get("kind") != kind:
        raise ContractError(
            f"{directory}: holds the {metadata.get('format')} {metadata.get('kind')} export; point at "
            f"<output_dir>/export/onnx/{kind}"
        )
    required = ("preprocessing", "output") if kind == "encoder" else ("sampler", "anchors", "output")
    missing = [field for field in required if field not in metadata]
    if missing:
        raise ContractError(
            f"{directory / METADATA_FILE}: no {', '.join(missing)} (exported by an older clsp); re-run `clsp export CONFIG --onnx --resume`"
        )
    # the file is a name inside this folder, never a path (a tampered sidecar must not point elsewhere)
    if metadata.get("file") != ONNX_FILE:
        raise ContractError(
            f"{directory / METADATA_FILE}: field 'file' is {json.dumps(metadata.get('file'))[:60]}, not {ONNX_FILE!r}; "
            "re-run `clsp export CONFIG --onnx --resume`"
        )
    model = directory / ONNX_FILE
    if not model.is_file() or _sha256(model) != metadata.get("artifact_sha256"):
        raise ContractError(
            f"{model}: missing or its SHA-256 differs from {METADATA_FILE}; re-run `clsp export CONFIG --onnx --resume`"
        )
    return metadata, onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- encoder: preprocessing ("preprocessing" in metadata.json) --------------------------------------------------


def image_files(root: str | Path) -> list[Path]:
    """The files under ``root``, recursively, sorted, without hidden files or folders (clsp's folder order)."""
    root = Path(root)
    if not root.is_dir():
        raise ContractError(f"{root}: not a folder of images")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ContractError(f"{root}: holds no files; put images (PNG, JPEG, ...) in it")
    return files


MAX_IMAGE_PIXELS = 89_478_485  # clsp's data.max_image_pixels default (Pillow's bomb threshold)


def read_rgb(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 ``[H, W, 3]``: the file decoded by Pillow and converted to RGB, 16-bit grey scaled to 8 bits
    ("decode"); files of more than ``max_pixels`` pixels are refused from their header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                picture = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
        with picture:
            width, height = picture.size
            if width * height > max_pixels:
                raise ContractError(f"{path}: {width}x{height} pixels, more than {max_pixels}; shrink or remove it")
            if picture.mode in ("I;16", "I;16L", "I;16B", "I"):
                grey = ((np.asarray(picture, dtype=np.int64).clip(0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.array(picture.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ContractError(f"{path}: not a readable image ({type(e).__name__}); remove it") from None


def to_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[H, W, channels]``; grey is ITU-R 601 luma in integers ("channels")."""
    if channels == 3:
        return rgb
    luma = (rgb.astype(np.uint32) @ np.array([299, 587, 114], np.uint32) + 500) // 1000
    return luma.astype(np.uint8)[..., None]


@lru_cache(maxsize=64)
def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """First source index ``[out]`` and float32 weights ``[out, taps]`` of the antialiased bilinear filter along
    one axis, computed in the float32/float64 steps of torch's CPU kernel so the weights match it bit for bit."""
    f32, f64 = np.float32, np.float64
    scale = f32(size_in) / f32(size_out)
    support = scale if scale >= 1 else f32(1)
    inverse = f32(1 / f64(scale)) if scale >= 1 else f32(1)
    taps = int(np.ceil(support)) * 2 + 1
    first = np.zeros(size_out, np.int64)
    weights = np.zeros((size_out, taps), np.float32)
    for i in range(size_out):
        centre = f32(f64(scale) * (i + 0.5))
        lo = max(int(f64(centre - support) + 0.5), 0)
        count = min(max(min(int(f64(centre + support) + 0.5), size_in) - lo, 0), taps)
        total = f32(0)
        for j in range(count):
            distance = abs(f32((f64(f32(f32(lo + j) - centre)) + 0.5) * f64(inverse)))
            weights[i, j] = f32(1 - f64(distance)) if distance < 1 else f32(0)
            total = f32(total + weights[i, j])
        if total != 0:
            weights[i, :count] /= total
        first[i] = lo
    return first, weights


def _resample(values: np.ndarray, size_out: int, axis: int) -> np.ndarray:
    """float32 ``values`` resampled to ``size_out`` along ``axis``: taps accumulated one by one in float32, each
    step a fused multiply-add (emulated in float64, then rounded), as torch's CPU kernel is compiled."""
    size_in = values.shape[axis]
    if size_in == size_out:
        return values
    first, weights = _taps(size_in, size_out)
    moved = np.moveaxis(values, axis, 0)
    column = (-1,) + (1,) * (moved.ndim - 1)  # one weight per output position, broadcast over the other axes
    out = moved[first] * weights[:, 0].reshape(column)
    for j in range(1, weights.shape[1]):  # taps past the image's edge have weight 0: adding them changes nothing
        term = moved[np.minimum(first + j, size_in - 1)].astype(np.float64) * weights[:, j].reshape(column)
        out = (out + term).astype(np.float32)
    return np.moveaxis(out, 0, axis)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, C]`` -> ``[size, size, C]``: shorter side to ``size``, antialiased bilinear, centre crop
    ("resize")."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = _resample(_resample(image.astype(np.float32), new_w, axis=1), new_h, axis=0)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top : top + size, left : left + size]
    return np.clip(np.round(crop), 0, 255).astype(np.uint8)


def normalise(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 ``[N, S, S, C]`` -> float32 ``[N, C, S, S]``: ``(uint8 / 255 - mean) / std`` per channel."""
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    shape = (1, -1, 1, 1)
    return (x - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)


def preprocess_files(files: list[Path], metadata: dict[str, Any]) -> np.ndarray:
    """uint8 ``[N, S, S, C]``: each file decoded, given the encoder's channels, then resized."""
    model = metadata["model"]
    return np.stack([resize(to_channels(read_rgb(p), model["channels"]), model["image_size"]) for p in files])


def encode_folder(encoder_dir: str | Path, image_dir: str | Path, batch_size: int = 256) -> np.ndarray:
    """float32 ``[N, D]`` features of the image files under ``image_dir`` (order: :func:`image_files`)."""
    metadata, session = load_artifact(encoder_dir, "encoder")
    images = preprocess_files(image_files(image_dir), metadata)
    mean, std = metadata["model"]["mean"], metadata["model"]["std"]
    name = metadata["inputs"][0]["name"]
    chunks = [
        session.run(None, {name: normalise(images[i : i + batch_size], mean, std)})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32, copy=False)


# ---- denoiser: the interpolating DDIM sampler ("sampler", "anchors", "output" in metadata.json) ------------------


def anchors_to_model(anchors: np.ndarray) -> np.ndarray:
    """uint8 ``[B, H, W, C]`` -> float32 ``[B, C, H, W]`` in [-1, 1]: ``uint8 / 127.5 - 1``."""
    if anchors.dtype != np.uint8 or anchors.ndim != 4:
        raise ContractError(f"anchors must be uint8 [B,H,W,C], got {anchors.dtype} {list(anchors.shape)}")
    return anchors.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(127.5) - np.float32(1)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float32 ``[B, C, H, W]`` -> uint8 ``[B, H, W, C]``: clamp to [-1, 1], ``(x + 1) / 2 * 255``, truncated."""
    scaled = (np.clip(x.astype(np.float32), -1, 1) + np.float32(1)) / np.float32(2) * np.float32(255)
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


SQRT_A, SQRT_1_A, SQRT_A_PREV, SIGMA, DIRECTION = (
    "sqrt(a)",
    "sqrt(1 - a)",
    "sqrt(a')",
    "sigma",
    "sqrt(1 - a' - sigma^2)",
)


def schedule(sampler: dict[str, Any]) -> list[tuple[int, dict[str, np.float32]]]:
    """Each step's t and float32 factors (``sampler.coefficients``), after checking that the recorded grid and
    factors follow ``sampler.rules``: linear betas, trailing spacing, set_alpha_to_one, the DDIM formulas."""
    if sampler["solver"] != "ddim" or sampler["prediction_type"] != "epsilon" or sampler["clip_sample"]:
        raise ContractError(
            f"sampler {sampler['solver']} ({sampler['prediction_type']}, clip_sample={sampler['clip_sample']}): this "
            "client runs DDIM with epsilon prediction and no clipping; export with positives.solver=ddim"
        )
    total, steps, eta = sampler["num_train_timesteps"], sampler["num_steps"], sampler["eta"]
    alphas_cumprod = np.cumprod(1 - np.linspace(sampler["beta_start"], sampler["beta_end"], total))
    stride = total // steps
    timesteps = [total - 1 - i * stride for i in range(steps)]
    a = alphas_cumprod[timesteps]
    a_prev = np.array([alphas_cumprod[t - stride] if t >= stride else 1.0 for t in timesteps])
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    expected = {
        SQRT_A: np.sqrt(a),
        SQRT_1_A: np.sqrt(1 - a),
        SQRT_A_PREV: np.sqrt(a_prev),
        SIGMA: sigma,
        DIRECTION: np.sqrt(1 - a_prev - sigma**2),
    }
    recorded = {name: np.array(sampler["coefficients"][name], np.float32) for name in expected}
    if timesteps != sampler["timesteps"] or not all(
        np.allclose(recorded[name], value, rtol=1e-5, atol=1e-7) for name, value in expected.items()
    ):
        raise ContractError("metadata.json: sampler.timesteps or sampler.coefficients do not follow sampler.rules")
    return [(t, {name: recorded[name][i] for name in recorded}) for i, t in enumerate(timesteps)]


def ddim_step(
    session: Any,
    x: np.ndarray,
    anchors: np.ndarray,
    t: int,
    factors: dict[str, np.float32],
    w: np.ndarray,
    anchor_noise: np.ndarray,
    z: np.ndarray | None,
) -> np.ndarray:
    """One step t -> t' on float32 ``[B, C, H, W]``: re-noise the anchors, predict eps, DDIM update (``z`` is
    used when ``factors["sigma"]`` > 0)."""
    anchor_t = factors[SQRT_A] * anchors + factors[SQRT_1_A] * anchor_noise
    floats = {"x_t": x, "anchor_t": anchor_t, "w": w}
    feeds = {name: value.astype(np.float32, copy=False) for name, value in floats.items()}
    (eps,) = session.run(None, {**feeds, "t": np.full(len(x), t, np.int64)})
    x0 = (x - factors[SQRT_1_A] * eps) / factors[SQRT_A]
    x = factors[SQRT_A_PREV] * x0 + factors[DIRECTION] * eps
    if factors[SIGMA] > 0:
        x = x + factors[SIGMA] * z
    return x.astype(np.float32, copy=False)


def sample(
    denoiser_dir: str | Path,
    anchors: np.ndarray,
    x_T: np.ndarray,
    anchor_noise: np.ndarray,
    z: np.ndarray | None = None,
    weight: float | np.ndarray | None = None,
) -> np.ndarray:
    """float32 ``[B, C, H, W]`` in [-1, 1]: one positive per uint8 anchor ``[B, H, W, C]``.

    Noise (float32, standard normal, the caller's): ``x_T [B,C,H,W]``, ``anchor_noise [S,B,C,H,W]`` and ``z
    [S,B,C,H,W]`` (needed when eta > 0), S = num_steps. ``weight`` (scalar or ``[B]``) defaults to the recorded w.
    """
    metadata, session = load_artifact(denoiser_dir, "denoiser")
    sampler = metadata["sampler"]
    steps = schedule(sampler)
    x0 = anchors_to_model(anchors)
    size, channels = metadata["model"]["image_size"], metadata["model"]["channels"]
    if x0.shape[1:] != (channels, size, size):
        raise ContractError(f"anchors are {list(anchors.shape)}; the denoiser takes [B, {size}, {size}, {channels}]")
    shape = (len(steps), *x0.shape)
    if x_T.shape != x0.shape or anchor_noise.shape != shape:
        raise ContractError(
            f"noise: x_T {list(x_T.shape)} and anchor_noise {list(anchor_noise.shape)} must be {list(x0.shape)} "
            f"and {list(shape)} for these anchors and {len(steps)} steps"
        )
    if sampler["eta"] > 0 and (z is None or z.shape != shape):
        raise ContractError(f"noise: eta = {sampler['eta']} needs z of shape {list(shape)}")
    for name, noise in (("x_T", x_T), ("anchor_noise", anchor_noise), ("z", z)):
        if noise is not None and not np.isfinite(noise).all():
            raise ContractError(f"noise: {name} holds NaN or infinite values; draw standard normal noise")
    if sampler.get("anchor_noise") == "shared":  # the anchor is re-noised with the sample's own x_T every step
        anchor_noise = np.broadcast_to(x_T, shape)
    w = np.broadcast_to(np.asarray(sampler["weight"] if weight is None else weight, np.float32), (len(x0),))
    if not ((w >= 0) & (w <= 1)).all():
        raise ContractError(f"weight: w must lie in [0, 1], got {w.min():g}..{w.max():g}")
    x = x_T.astype(np.float32)
    for i, (t, factors) in enumerate(steps):
        x = ddim_step(session, x, x0, t, factors, w, anchor_noise[i], None if z is None else z[i])
    return np.clip(x, -1, 1)


# ---- command line ------------------------------------------------------------------------------------------------


def _read_array(path: Path) -> Any:
    """An ``.npy`` array or ``.npz`` archive, or a ContractError naming the file."""
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise ContractError(f"{path}: not a readable .npy/.npz file ({type(e).__name__})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    features = commands.add_parser("features", help="encode every image file under a folder")
    features.add_argument("encoder_dir", type=Path)
    features.add_argument("image_dir", type=Path)
    features.add_argument("--out", type=Path, required=True, help=".npy: float32 [N, D]")
    positives = commands.add_parser("sample", help="interpolating DDIM with the caller's noise")
    positives.add_argument("denoiser_dir", type=Path)
    positives.add_argument("--anchors", type=Path, required=True, help=".npy: uint8 [B, H, W, C]")
    positives.add_argument("--noise", type=Path, required=True, help=".npz: x_T, anchor_noise, z (eta > 0)")
    positives.add_argument("--weight", type=float, default=None, help="w; default: the exported sampler's")
    positives.add_argument("--out", type=Path, required=True, help=".npy: uint8 [B, H, W, C]")
    args = parser.parse_args(argv)
    try:
        if not args.out.parent.is_dir():
            raise ContractError(f"--out {args.out}: the folder {args.out.parent} does not exist; create it first")
        if args.command == "features":
            np.save(args.out, encode_folder(args.encoder_dir, args.image_dir))
        else:
            noise = _read_array(args.noise)
            if not {"x_T", "anchor_noise"} <= set(getattr(noise, "files", ())):
                raise ContractError(f"{args.noise}: needs arrays x_T and anchor_noise (and z when eta > 0)")
            z = noise["z"] if "z" in noise.files else None
            anchors = _read_array(args.anchors)
            if not isinstance(anchors, np.ndarray):
                raise ContractError(f"{args.anchors}: needs one uint8 [B, H, W, C] array (.npy)")
            x = sample(args.denoiser_dir, anchors, noise["x_T"], noise["anchor_noise"], z, args.weight)
            np.save(args.out, to_uint8(x))
    except ContractError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
