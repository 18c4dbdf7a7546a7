"""Fill a :class:`PositiveStore` with k synthetic positives per training image (method.md 2.4).

Shards are dealt round-robin to the Accelerate processes (``accelerate launch -m clsp.cli positives generate``
or ``torchrun --nproc_per_node N -m clsp.cli positives generate``); finished shards are skipped, so a rerun
after an interruption only does what is left. Every positive's noise is keyed by (seed, image index, candidate
index), so the store is the same for any batch size, process count or resume point.
"""

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import TextColumn

from clsp.accelerator import describe_device, pick_device, stage_accelerator
from clsp.config import Config, save_resolved_config
from clsp.data import ImageRows, ImageSet, as_rows, load_training_images
from clsp.diffusion.noise import NOISE_VERSION
from clsp.diffusion.sampler import Denoiser, SamplerSettings, images_to_model, model_to_uint8, sample_positives
from clsp.diffusion.unet import (
    SHIPPED,
    InterpolatingDenoiser,
    load_trained_unet,
    shipped_provenance,
    trained_unet_source,
)
from clsp.errors import ClspError
from clsp.positives.store import MANIFEST, PositiveStore
from clsp.progress import progress_bar
from clsp.run_folder import keep_earlier, run_lock


@dataclass(frozen=True)
class GenerationResult:
    store: Path
    generated: int
    """Positives written by this run (all processes)."""
    seconds: float
    complete: bool
    num_processes: int
    device: str

    def summary(self) -> dict[str, object]:
        rate = self.generated / self.seconds if self.seconds > 0 else 0.0
        return {
            "store": self.store,
            "positives written now": self.generated,
            "wall time": f"{self.seconds:.1f} s",
            "positives / s": f"{rate:.2f}",
            "processes": self.num_processes,
            "device": self.device,
            "complete": "yes" if self.complete else "no: rerun to finish",
        }


def unet_content_hash(unet: torch.nn.Module) -> str:
    """SHA-256 over the UNet's architecture config (diffusers' ``config`` without its ``_``-private entries, such as
    the folder it came from) and its parameter and buffer names, shapes and values: which model made the positives.
    An edited ``config.json`` (``act_fn``, ...) changes the positives with the same weights, so it changes this."""
    digest = hashlib.sha256()
    config = getattr(unet, "config", {})
    public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    digest.update(json.dumps(public, sort_keys=True, default=str).encode())
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def shipped_unet_record(cfg: Config) -> dict[str, object]:
    """``{"unet_shipped": {name, weights SHA-256, the command that trained it}}`` when positives come from a shipped
    UNet, else ``{}`` (``unet_sha256`` identifies the weights either way)."""
    source = trained_unet_source(cfg)
    if source not in SHIPPED:
        return {}
    p = shipped_provenance(source)
    return {"unet_shipped": {"name": source, "weights_sha256": p["weights_sha256"], "command": p["command"]}}


DenoiserBackend = Callable[[Config, InterpolatingDenoiser, torch.device], Denoiser]
"""``(cfg, denoiser, device) -> the denoiser positives.backend runs``: :func:`torch_backend`, or
:func:`clsp.runtime.load.load_denoiser` for the exported backends (the runtime is a layer above this one, so the
commands that generate pass it in)."""


def effective_precision(cfg: Config, settings: SamplerSettings) -> str:
    """The precision ``positives.backend``'s denoiser computes in: the sampler's (``positives.precision``, ``auto``
    resolved for the device) for torch and TorchScript (traced graphs follow autocast), fp32 for ONNX Runtime and
    pt2, ``export.trt_precision`` for TensorRT."""
    backend = cfg.positives.backend
    if backend in ("torch", "torchscript"):
        return settings.precision
    return cfg.export.trt_precision if backend == "trt" else "fp32"


def torch_backend(cfg: Config, denoiser: InterpolatingDenoiser, device: torch.device) -> Denoiser:
    """``positives.backend=torch``: ``denoiser`` itself, compiled when ``positives.compile`` is set. Another backend
    runs an export, which only :func:`clsp.runtime.load.load_denoiser` opens: a one-line error here."""
    if cfg.positives.backend != "torch":
        raise ClspError(
            f"positives.backend={cfg.positives.backend} runs an export: generate with `clsp positives generate`, or "
            "pass backend=clsp.runtime.load.load_denoiser to generate_positives"
        )
    if cfg.positives.compile:
        # CUDA graphs (reduce-overhead) replay the whole step without per-kernel launch cost.
        mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
        return torch.compile(denoiser, mode=mode, dynamic=False)
    return denoiser


def anchor_images(cfg: Config, limit: int | None) -> tuple[ImageSet, ImageRows]:
    """The training images (:func:`~clsp.data.load_training_images`; their first ``limit`` when given) and their
    anchors: uint8 ``[N, H, W, C]``, resized to ``diffusion.image_size`` (when that is set) as they are read."""
    images = load_training_images(cfg.data)
    if limit is not None and limit < len(images):
        images = images.subset(np.arange(limit), f"{images.name}[:{limit}]")
    return images, as_rows(images.images).resized(cfg.diffusion.image_size)


def generate_shard(
    denoiser: Denoiser,
    anchors: ImageRows,
    rows: range,
    num_candidates: int,
    weight: float,
    seed: int,
    settings: SamplerSettings,
    batch_size: int,
    device: torch.device,
    on_batch=None,
) -> np.ndarray:
    """All k candidates of dataset rows ``rows``: uint8 ``[len(rows), k, H, W, C]``.

    The (row, candidate) pairs are flattened row-major and sampled ``batch_size`` at a time. Results are copied
    off the device without blocking (into pinned memory on CUDA); the host waits once, at the end of the shard.
    """
    local = torch.arange(len(rows)).repeat_interleave(num_candidates)
    image_idx, cand_idx = local + rows.start, torch.arange(num_candidates).repeat(len(rows))
    x0, local_on_device = images_to_model(anchors[rows.start : rows.stop]).to(device), local.to(device)
    pinned = device.type == "cuda"
    out = torch.empty((len(local), *anchors.shape[1:]), dtype=torch.uint8, pin_memory=pinned)
    for start in range(0, len(local), batch_size):
        batch = slice(start, start + batch_size)
        samples = sample_positives(
            denoiser, x0[local_on_device[batch]], weight, image_idx[batch], cand_idx[batch], seed, settings
        )
        out[batch].copy_(model_to_uint8(samples), non_blocking=pinned)
        if on_batch is not None:
            on_batch(len(local[batch]))
    if pinned:
        torch.cuda.current_stream(device).synchronize()
    return out.numpy().reshape(len(rows), num_candidates, *anchors.shape[1:])


def generate_positives(
    cfg: Config,
    limit: int | None = None,
    device: str = "auto",
    backend: DenoiserBackend = torch_backend,
    resume: bool = False,
    overwrite: bool = False,
) -> GenerationResult:
    """Generate (or finish) the positive store of ``cfg`` at ``ssl.positives`` (default ``<output_dir>/positives``).

    ``device``: ``auto`` (each process's CUDA GPU when usable, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    ``backend``: what runs the denoiser (:data:`DenoiserBackend`); the default runs only ``positives.backend=torch``.
    A store already there is finished (or, when complete, reused) only with ``resume``, which keeps its shards and
    refuses other settings, and replaced only with ``overwrite``; without either it is refused, as training refuses
    an earlier run.
    """
    if limit is not None and limit < 1:
        raise ClspError(f"--limit must be at least 1, got {limit}")
    chosen = pick_device(device)
    settings = SamplerSettings.from_config(cfg, chosen)
    settings.check()  # before anything is loaded or the store is created
    if chosen.type == "cuda" and chosen.index is not None:
        torch.cuda.set_device(chosen)  # Accelerate's single-process "cuda" is the current device
    accelerator = stage_accelerator(**({"cpu": True} if chosen.type == "cpu" and torch.cuda.is_available() else {}))
    root = cfg.positives_store
    earlier = "the positives" if (root / MANIFEST).is_file() else None
    if earlier and not keep_earlier(root, earlier, resume, overwrite, "finish or reuse them (same settings)"):
        if accelerator.is_main_process:
            shutil.rmtree(root)
        accelerator.wait_for_everyone()
    p = cfg.positives
    dataset, anchors = anchor_images(cfg, limit)
    unet = load_trained_unet(cfg)
    denoiser = InterpolatingDenoiser(unet, p.num_layers).to(accelerator.device).eval()
    if tuple(denoiser.sample_shape) != (anchors.shape[3], anchors.shape[1], anchors.shape[2]):
        raise ClspError(
            f"the UNet makes {list(denoiser.sample_shape)} [C,H,W] images but the anchors are "
            f"{list(anchors.shape[1:])} [H,W,C]; set diffusion.image_size to the UNet's size"
        )
    denoiser = backend(cfg, denoiser, accelerator.device)  # positives.backend: the module or its export
    precision = effective_precision(cfg, settings)  # ort and pt2 run fp32 whatever positives.precision says
    provenance = {
        "dataset": dataset.name,
        "unet_sha256": unet_content_hash(unet),
        **shipped_unet_record(cfg),
        "backend": p.backend,
        "sampler": {"weight": p.weight, "num_layers": p.num_layers, **settings.__dict__, "precision": precision},
        # The batch changes the float summation order of the convolutions (bf16: up to 1.5 % of pixels by a few
        # levels; fp32: a pixel by 1 level), so it is keyed: a resume with another batch size is refused.
        "batch_size": p.batch_size,
        "seed": p.seed,
        "noise": NOISE_VERSION,
    }
    header = dict(
        n=len(dataset),
        num_candidates=p.num_candidates,
        image_shape=anchors.shape[1:],
        dataset_fingerprint=dataset.fingerprint,
        provenance=provenance,
        shard_size=p.shard_size,
    )
    with run_lock(root, accelerator.is_main_process):  # one generating job per store
        if accelerator.is_main_process:
            store = PositiveStore.create(root, **header)
            save_resolved_config(cfg, root)
        accelerator.wait_for_everyone()
        store = PositiveStore.create(root, **header) if not accelerator.is_main_process else store
        todo = [s for s in store.missing_shards() if s % accelerator.num_processes == accelerator.process_index]
        mine = sum(len(store.shard_rows(s)) for s in todo) * p.num_candidates
        started = time.perf_counter()
        with progress_bar(TextColumn("{task.fields[rate]} positives/s")) as progress:
            task = progress.add_task(
                f"positives (process {accelerator.process_index + 1}/{accelerator.num_processes})",
                total=mine,
                rate="-",
                visible=accelerator.is_local_main_process,
            )

            def advance(count: int) -> None:
                done = progress.tasks[task].completed + count
                progress.update(task, completed=done, rate=f"{done / (time.perf_counter() - started):.2f}")

            # One writer thread: shard i is hashed and written while shard i + 1 is generated (at most one waits).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
                writing = None
                for shard in todo:
                    positives = generate_shard(
                        denoiser, anchors, store.shard_rows(shard), p.num_candidates, p.weight, p.seed, settings,
                        p.batch_size, accelerator.device, advance,
                    )  # fmt: skip
                    if writing is not None:
                        writing.result()  # raises a failed write here
                    writing = writer.submit(store.write_shard, shard, positives)
                if writing is not None:
                    writing.result()
        written = accelerator.reduce(torch.tensor(mine, device=accelerator.device), reduction="sum").item()
        accelerator.wait_for_everyone()
    final = PositiveStore.open(root, check="none")
    return GenerationResult(
        store=root,
        generated=int(written),
        seconds=time.perf_counter() - started,
        complete=final.is_complete,
        num_processes=accelerator.num_processes,
        device=describe_device(accelerator.device, device),
    )
