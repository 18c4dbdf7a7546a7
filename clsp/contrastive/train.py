"""Self-supervised training with the CLSP term (method.md 3): SimCLR, MoCo v2+ or NNCLR on Accelerate.

:func:`train_ssl` supplies the method, its data and one step to the shared loop (:mod:`clsp.loop`); ``clsp train
CONFIG`` and the ``accelerate launch clsp/train.py`` entry point call it through :func:`run_training`.

Writes under ``<run.output_dir>/ssl/``: ``config.yaml``, ``metrics.jsonl`` (one line per epoch), ``state/``
(resume state, safetensors + JSON: model with queues and key encoder, optimizer, step counters; see
:mod:`clsp.training_state`), ``backbone.safetensors`` and
``backbone.json``. Every batch is a function of ``(run.seed, step, process)`` (see :mod:`clsp.contrastive.views`), so
``--resume`` continues exactly where the saved state left off.
"""

import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch.utils.data import DataLoader

from clsp.atomic import atomic_write_text
from clsp.config import Config, load_config, save_resolved_config
from clsp.contrastive.backbones import CONFIG_FILE, WEIGHTS_FILE, save_backbone
from clsp.contrastive.distributed import convert_to_global_batchnorm
from clsp.contrastive.methods import build_method
from clsp.contrastive.schedule import learning_rate, moco_momentum
from clsp.contrastive.views import MultiViewDataset, open_positives
from clsp.data import load_training_images
from clsp.data.augment import Augmentation, normalisation
from clsp.errors import ClspError
from clsp.interrupt import ignore_stop_signals
from clsp.json_files import json_field, read_json_lines
from clsp.loop import GlobalBatchSampler, TrainingLoop, check_resumed_step, claimed_stage, report, training_accelerator
from clsp.progress import warn
from clsp.run_folder import DATA_RESUME_SAFE
from clsp.training_state import (
    PROGRESS_FILE,
    load_training_state,
)

RESUME_SECTIONS = ("data", "ssl", "run.seed", "eval.online_probe")
RESUME_SAFE = frozenset(
    {
        *DATA_RESUME_SAFE,
        *(f"ssl.{k}" for k in ("epochs", "lr", "min_lr", "probe_lr", "mixed_precision", "sync_bn", "positives")),
        *(f"ssl.{k}" for k in ("num_workers", "save_every_epochs", "tensorboard")),
    }
)
"""Settings a resumed run may change: schedule length and learning rates (e.g. after a non-finite stop),
precision, and where things are; everything else under RESUME_SECTIONS must equal the saved config's."""

EPOCH_SUMS = ("loss", "ssl", "clsp", "probe", "probe_correct", "probe_count", "steps")


@dataclass
class SSLResult:
    """What a training run did and where it wrote."""

    step: int
    total_steps: int
    losses: list[float] = field(repr=False)
    """The total loss (mean over processes) of every step this call ran."""
    last_epoch: dict[str, float]
    """The last ``metrics.jsonl`` line this call wrote (empty if it finished no epoch)."""
    seconds: float
    images_per_second: float
    backbone: Path | None
    metrics: Path
    state_dir: Path
    interrupted: bool = False
    """Stopped by Ctrl-C (the state is saved; ``--resume`` continues)."""

    def summary(self) -> dict[str, object]:
        e = self.last_epoch
        rows: dict[str, object] = {"steps": f"{self.step} / {self.total_steps}"}
        if e:
            rows["epoch"] = e["epoch"]
            rows["loss (last epoch)"] = f"{e['loss']:.4f} (contrastive {e['ssl']:.4f}, clsp {e['clsp']:.4f})"
            if "probe_train_acc" in e:
                rows["online probe train acc"] = f"{100 * e['probe_train_acc']:.2f}%"
        rows["throughput"] = f"{self.images_per_second:.0f} images/s (all views, all processes)"
        rows["time"] = f"{self.seconds:.0f} s"
        rows["backbone"] = self.backbone or "- (not finished: rerun with --resume)"
        rows["metrics"] = self.metrics
        rows["resume state"] = self.state_dir
        return rows


class TrainProgress:
    """The optimizer step and the running sums of the current epoch, saved as the state's ``progress.json``."""

    def __init__(self, positives: str | None = None) -> None:
        self.step = 0
        self.sums = dict.fromkeys(EPOCH_SUMS, 0.0)
        self.positives = positives
        """:attr:`~clsp.positives.store.PositiveStore.identity` of the store the run trains on (None: none)."""

    def state_dict(self) -> dict[str, object]:
        return {"step": self.step, "sums": dict(self.sums), "positives": self.positives}

    def load_state_dict(self, state: dict, path: Path) -> None:
        """Restore from a saved ``progress.json`` (``path``, named in errors), checking every field it holds."""
        fix = "restore the state folder or start over with --overwrite"
        self.step = json_field(state, "step", int, path, fix, minimum=0)
        sums = json_field(state, "sums", dict, path, fix)
        if set(sums) != set(EPOCH_SUMS):
            raise ClspError(f"{path}: field 'sums' has keys {sorted(sums)}, expected {sorted(EPOCH_SUMS)}; {fix}")
        self.sums = {k: float(json_field(sums, k, float, path, fix)) for k in EPOCH_SUMS}
        saved = state.get("positives")
        if saved != self.positives:
            raise ClspError(
                f"--resume: {path.parent.parent} trained on positives {_short_id(saved)}, but ssl.positives now "
                f"holds {_short_id(self.positives)}; point ssl.positives back at that store, or start over with "
                "--overwrite"
            )


def _short_id(identity: str | None) -> str:
    return "none (no synthetic view)" if identity is None else f"store {str(identity)[:12]}"


def _accelerator(cfg: Config) -> Accelerator:
    log_with = None
    if cfg.ssl.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ClspError("ssl.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
        log_with = "tensorboard"
    # Buffers (queues, BN running stats) are never broadcast: queues are equal on every process by construction,
    # and broadcasting a 32k x 256 queue every step would dominate the communication.
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
    return training_accelerator(
        cfg.ssl.mixed_precision, "ssl", kwargs_handlers=[ddp], log_with=log_with, project_dir=str(cfg.layout.ssl)
    )


def _dataset(cfg: Config, num_processes: int) -> tuple[MultiViewDataset, int | None, dict[str, object]]:
    """The multi-view dataset, its number of classes (None without labels) and the backbone's input spec."""
    s = cfg.ssl
    images = load_training_images(cfg.data)
    n, (h, _, c) = len(images), images.image_shape
    if s.batch_size % num_processes:
        raise ClspError(f"ssl.batch_size={s.batch_size} is not divisible by {num_processes} processes; change it")
    if n < s.batch_size:
        raise ClspError(f"ssl.batch_size={s.batch_size} exceeds the {n} training images; lower ssl.batch_size")
    queue = {"moco": "queue_size", "nnclr": "nnclr_support_size"}.get(s.method)
    if queue and getattr(s, queue) % s.batch_size:
        raise ClspError(f"ssl.{queue}={getattr(s, queue)} must be a multiple of ssl.batch_size={s.batch_size}")
    mean, std = normalisation(cfg.data.source, images.images)
    if len(s.augment.mean or mean) != c:
        raise ClspError(f"ssl.augment.mean/std have {len(s.augment.mean)} values but the images have {c} channels")
    third_view = "none" if s.clsp_weight == 0 else s.positive
    store = None
    if third_view == "synthetic":
        # Same default folder as `clsp positives generate`.
        path = cfg.positives_store
        store = open_positives(path, n, c, images.fingerprint, f"{images.name} ({cfg.data.train_split})")
        if s.num_candidates > store.num_candidates:
            warn(f"ssl.num_candidates={s.num_candidates} but {path} holds {store.num_candidates}; using all of them")
    augmentation = Augmentation(s.augment, h, mean, std)
    dataset = MultiViewDataset(
        images.images, images.labels, augmentation, cfg.run.seed, third_view, store, s.num_candidates
    )
    num_classes = None
    if images.labels is not None and cfg.eval.online_probe:
        num_classes = max(len(images.class_names), int(images.labels.max()) + 1)
    spec = {
        "in_channels": c,
        "image_size": s.augment.crop_size or h,
        "mean": list(s.augment.mean or mean),
        "std": list(s.augment.std or std),
        "dataset": images.name,
        "dataset_fingerprint": images.fingerprint,
        "positives": None if store is None else {"path": str(store.root), "identity": store.identity},
    }
    return dataset, num_classes, spec


def train_ssl(cfg: Config, resume: bool = False, max_steps: int | None = None, overwrite: bool = False) -> SSLResult:
    """Train ``cfg.ssl.method`` with the CLSP term (λ = ``ssl.clsp_weight``) on ``cfg.data``'s training split.

    ``resume`` continues from ``<output_dir>/ssl/state`` (refused if the settings changed beyond
    :data:`RESUME_SAFE`); without it an earlier run's outputs are only replaced with ``overwrite``. ``max_steps``
    stops (and saves the state) once that many optimizer steps are done in all, as if the run were interrupted
    there; Ctrl-C does the same after the current step. The backbone is exported when the last epoch finishes. A
    non-finite loss or weights stop the run with a :class:`ClspError` and never reach the saved state, which stays
    the last good one. One process at a time may write to a run folder.
    """
    outputs = ("state", WEIGHTS_FILE, "metrics.jsonl")
    accelerator = partial(_accelerator, cfg)
    with claimed_stage(
        cfg.layout.ssl, cfg, resume, overwrite, outputs, RESUME_SECTIONS, RESUME_SAFE, accelerator
    ) as acc:
        return _train(cfg, acc, resume, max_steps)


def _train(cfg: Config, accelerator: Accelerator, resume: bool, max_steps: int | None) -> SSLResult:
    s = cfg.ssl
    started = time.perf_counter()
    out = cfg.layout.ssl
    state_dir, metrics_path = out / "state", out / "metrics.jsonl"
    main, num_processes = accelerator.is_main_process, accelerator.num_processes
    dataset, num_classes, spec = _dataset(cfg, num_processes)
    steps_per_epoch = len(dataset) // s.batch_size
    total_steps = s.epochs * steps_per_epoch

    torch.manual_seed(cfg.run.seed)
    model = build_method(s, spec["in_channels"], num_classes)
    if s.sync_bn and num_processes > 1:
        model = (
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            if accelerator.device.type == "cuda"
            else convert_to_global_batchnorm(model)
        )
    encoder = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("probe.")]
    groups = [{"params": encoder, "scheduled": True}]
    if model.probe is not None:
        groups.append({"params": list(model.probe.parameters()), "lr": s.probe_lr, "weight_decay": 0.0})
    optimizer = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    progress = TrainProgress(None if dataset.positives is None else dataset.positives.identity)
    with warnings.catch_warnings():
        # torch 2.14 renames broadcast_buffers, which Accelerate's DDP kwargs still use; the behaviour is the same.
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
        model, optimizer = accelerator.prepare(model, optimizer)
    if resume:
        progress.load_state_dict(
            load_training_state(accelerator, state_dir, model, optimizer)[0], state_dir / PROGRESS_FILE
        )
        check_resumed_step(progress.step, total_steps, state_dir, "ssl", s.epochs)
    if main:
        save_resolved_config(cfg, out)
        if resume:
            _keep_epochs_until(metrics_path, progress.step)
        else:
            for name in ("state", WEIGHTS_FILE, CONFIG_FILE, "metrics.jsonl"):
                shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
    if s.tensorboard:
        accelerator.init_trackers("tensorboard")

    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)
    sampler = GlobalBatchSampler(
        len(dataset), s.batch_size, accelerator.process_index, num_processes, cfg.run.seed, progress.step, stop_at
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=dataset.collate,
        num_workers=s.num_workers,
        worker_init_fn=ignore_stop_signals if s.num_workers else None,
        pin_memory=accelerator.device.type == "cuda",
        prefetch_factor=4 if s.num_workers else None,
    )
    device, views_per_image = accelerator.device, 2 + (dataset.third_view != "none")
    last_epoch: dict[str, float] = {}
    epoch_started, epoch_steps = time.perf_counter(), 0  # this call's steps of the current epoch
    schedule: dict[str, float] = {}  # the last step's lr and MoCo momentum, for its epoch's metrics line
    run_started = time.perf_counter()

    def compute(batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr = learning_rate(step // steps_per_epoch, s.lr, s.epochs, s.warmup_epochs, s.warmup_start_lr, s.min_lr)
        for group in optimizer.param_groups:
            if group.get("scheduled"):
                group["lr"] = lr
        momentum = moco_momentum(step, total_steps, s.moco_momentum_start, s.moco_momentum_end)
        schedule.update(lr=lr, momentum=momentum)
        views = [batch[k].to(device, non_blocking=True) for k in ("v1", "v2", "v3") if k in batch]
        terms = model(views, batch["label"].to(device, non_blocking=True), momentum)
        zero = terms["loss"].new_zeros(())
        sums = torch.stack([terms.get(k, zero).detach().float() for k in EPOCH_SUMS[:-1]] + [zero + 1])
        return terms["loss"] + terms.get("probe", zero), sums

    def after_step(step: int, summed: torch.Tensor) -> None:
        nonlocal last_epoch, epoch_started, epoch_steps
        progress.step = step
        epoch_steps += 1
        for k, v in zip(EPOCH_SUMS, summed.tolist(), strict=True):
            progress.sums[k] += v
        if step % steps_per_epoch:
            return
        last_epoch = _epoch_metrics(
            progress, step // steps_per_epoch - 1, schedule["lr"], schedule["momentum"], s.method
        )
        seconds = time.perf_counter() - epoch_started
        last_epoch["images_per_s"] = views_per_image * s.batch_size * epoch_steps / seconds
        epoch_started, epoch_steps = time.perf_counter(), 0
        progress.sums = dict.fromkeys(EPOCH_SUMS, 0.0)
        if main:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(last_epoch) + "\n")
        if s.tensorboard:
            accelerator.log(last_epoch, step=step)

    loop = TrainingLoop(
        accelerator, model, optimizer, state_dir, "ssl", f"{s.method} (λ={s.clsp_weight})", total_steps,
        s.save_every_epochs * steps_per_epoch, lambda step: (progress.state_dict(), None),
    )  # fmt: skip
    ran = loop.run(progress.step, stop_at, loader, compute, after_step)
    interrupted, losses, run_steps = ran.interrupted, ran.losses, len(ran.losses)

    seconds = time.perf_counter() - run_started
    backbone = None
    if progress.step == total_steps and main:
        spec.update(
            backbone=s.backbone,
            stem=s.stem,
            feature_dim=accelerator.unwrap_model(model).feature_dim,
            method=s.method,
            clsp_weight=s.clsp_weight,
            positive=s.positive,
            epochs=s.epochs,
        )
        backbone = save_backbone(accelerator.unwrap_model(model).backbone, out, spec)
    # Not accelerator.end_training(): it also destroys the process group, which the barrier below and any later
    # stage in this process still use; the entry point closes it (clsp.cli_args.close_process_group).
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.wait_for_everyone()
    rate = views_per_image * s.batch_size * run_steps / seconds if run_steps else 0.0
    return SSLResult(
        progress.step,
        total_steps,
        losses,
        last_epoch,
        time.perf_counter() - started,
        rate,
        backbone,
        metrics_path,
        state_dir,
        interrupted,
    )


def _keep_epochs_until(metrics_path: Path, step: int) -> None:
    """Drop the ``metrics.jsonl`` lines of epochs that ended after ``step`` (the resumed state's): a run killed
    between an epoch's line and the next saved state redoes those epochs, and each must appear once."""
    if not metrics_path.is_file():
        return
    fix = f"repair or delete {metrics_path} (the weights in the state are unaffected)"
    lines = metrics_path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = read_json_lines(metrics_path, fix)
    kept = [r for r in records if json_field(r, "step", int, metrics_path, fix) <= step]
    if len(kept) != len(lines):
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))


def _epoch_metrics(progress: TrainProgress, epoch: int, lr: float, momentum: float, method: str) -> dict[str, float]:
    """One ``metrics.jsonl`` line from the epoch's sums (losses summed over steps and processes)."""
    sums = progress.sums
    denominator = sums["steps"]  # steps x processes
    line: dict[str, float] = {
        "epoch": epoch + 1,
        "step": progress.step,
        "lr": lr,
        "loss": sums["loss"] / denominator,
        "ssl": sums["ssl"] / denominator,
        "clsp": sums["clsp"] / denominator,
    }
    if method == "moco":
        line["moco_momentum"] = momentum
    if sums["probe_count"]:
        line["probe_loss"] = sums["probe"] / denominator
        line["probe_train_acc"] = sums["probe_correct"] / sums["probe_count"]
    return line


def run_training(
    config: Path, overrides: list[str], resume: bool, max_steps: int | None = None, overwrite: bool = False
) -> SSLResult:
    """Load ``config`` with ``--set`` overrides, train, and print the summary (the CLI and the script); a run
    stopped by Ctrl-C or SIGTERM raises :class:`~clsp.interrupt.Interrupted` after its summary (exit 130 or 143)."""
    return report(train_ssl(load_config(config, overrides), resume, max_steps, overwrite), "self-supervised training")
