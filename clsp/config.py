"""The one config schema: a section per pipeline stage, loaded from YAML, overridable, validated on load.

Defaults are the paper's CIFAR-10 settings (docs/method.md sections 1-4); the YAML files in
``configs/`` override what differs per dataset and the embedded digits default shrinks everything for a CPU.
"""

import importlib.resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from clsp.atomic import atomic_write_text, file_in_the_way
from clsp.differences import shorten
from clsp.errors import ClspError
from clsp.run_layout import RunLayout

PositiveFloat = Annotated[float, Field(gt=0)]
# YAML 1.1 reads a bare `no` as False: accept it as "no" (off), as Accelerate spells it.
Precision = Annotated[Literal["no", "bf16", "fp16"], BeforeValidator(lambda v: "no" if v is False else v)]

SPLITS: dict[str, tuple[str, ...]] = {
    "digits": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled"),
    "fashion_mnist": ("train", "test"),
    "mnist": ("train", "test"),
    "folder": ("train", "val", "test", "all"),
    "torchvision": ("train", "val", "test", "unlabeled", "extra", "all"),
}
"""Split names per source. A folder has those its layout gives (``clsp.data.folder_splits``); ``all`` is every image
of a one-split folder; a torchvision dataset has those of :data:`TORCHVISION_SPLITS`."""

CACHED_SOURCES = ("folder", "torchvision")
"""Sources decoded from image files, whose splits go through the decoded-image cache."""

_TRAIN_FLAG = {"train": {"train": True}, "test": {"train": False}}
TORCHVISION_SPLITS: dict[str, dict[str, dict[str, Any]] | None] = {
    "MNIST": _TRAIN_FLAG,
    "FashionMNIST": _TRAIN_FLAG,
    "KMNIST": _TRAIN_FLAG,
    "USPS": _TRAIN_FLAG,
    "SVHN": {"train": {"split": "train"}, "test": {"split": "test"}, "extra": {"split": "extra"}},
    "DTD": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "Flowers102": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "FGVCAircraft": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "OxfordIIITPet": {"train": {"split": "trainval"}, "test": {"split": "test"}},
    "Food101": {"train": {"split": "train"}, "test": {"split": "test"}},
    "StanfordCars": {"train": {"split": "train"}, "test": {"split": "test"}},
    "GTSRB": {"train": {"split": "train"}, "test": {"split": "test"}},
    "Country211": {"train": {"split": "train"}, "val": {"split": "valid"}, "test": {"split": "test"}},
    "FER2013": {"train": {"split": "train"}, "test": {"split": "test"}},
    "ImageNet": {"train": {"split": "train"}, "test": {"split": "val"}},
    "Caltech101": None,
    "SUN397": None,
    "EuroSAT": None,
}
"""``data.source: torchvision``: for each supported ``data.dataset`` (a ``torchvision.datasets`` class), each clsp split
and the class's keyword arguments that select it (ImageNet's test split is its labelled ``val``). None: the class has
one split, which clsp splits class-stratified into ``train`` and ``test`` (``data.test_fraction``,
``data.split_seed``) and calls ``all`` whole. CIFAR and STL-10 are clsp sources of their own (``cifar10``, ``stl10``):
torchvision's CIFAR reader unpickles its files."""


SSL_METHODS = ("simclr", "moco", "nnclr")
DEMO_METHODS = tuple(f"{p}{m}{q}" for m in SSL_METHODS for p, q in (("", ""), ("clsp-", ""), ("", "-real3")))
"""The rows ``clsp demo`` can train: a method's baseline (λ = 0), its CLSP variant (``clsp-``: λ = ssl.clsp_weight on a
synthetic positive) and the paper's control (``-real3``: the same λ on a third real augmented view)."""


class Section(BaseModel):
    # allow_inf_nan=False: YAML reads `.inf`, `.nan` and `1e400` as floats, which no field of clsp means.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunConfig(Section):
    output_dir: Path = Path("runs/default")
    """Every stage writes under this folder (``unet/``, ``positives/``, ``ssl/``, ``eval/``, ``export/``)."""
    seed: int = Field(0, ge=0)


class DataConfig(Section):
    source: Literal["digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "stl10", "folder", "torchvision"] = (
        "digits"
    )
    root: Path | None = None
    """torchvision root (cifar10/cifar100/stl10), the image folder (folder), or the folder of the idx files or of
    torchvision's FashionMNIST/raw (MNIST/raw) (fashion_mnist, mnist: default /usr/share/datasets/fashion-mnist,
    where Debian's dataset-fashion-mnist installs them); unused for digits. A folder with ``train/`` and ``val/`` or
    ``test/`` sub-folders has those splits (``test`` reads ``test/``, else ``val/``); a folder without them
    is split class-stratified by ``test_fraction`` and ``split_seed``."""
    dataset: str | None = None
    """torchvision: the ``torchvision.datasets`` class (e.g. ``DTD``, ``Flowers102``), read from ``root``; supported
    ones and their splits: :data:`TORCHVISION_SPLITS` (docs/data.md)."""
    roots: dict[Literal["train", "val", "test"], Path] | None = None
    """folder: one folder per split instead of ``root`` (e.g. ``{train: /data/in100/train, test: /data/in100/val}``);
    every split needs the same class sub-folders."""
    image_size: int | None = Field(None, ge=4, le=1024)
    """Resize every image to this square size; None keeps the native size (digits: 16)."""
    channels: Literal[1, 3] | None = None
    """1 (grey) or 3 (RGB) channels per image; None keeps the source's own (digits 1; cifar, stl10, folder 3).
    One rule for every source and for ``clsp features --input`` (which uses the encoder's channels): an image
    file is decoded to RGB (palette expanded, alpha ignored, grey repeated), made grey when 1 channel is asked
    with ITU-R 601 luma ``(299 R + 587 G + 114 B + 500) // 1000`` (grey files keep their values), then resized.
    A folder of greyscale images trains a 1-channel encoder only with ``channels: 1``."""
    train_split: str = "train"
    """Images for diffusion training, positives and SSL (STL-10: unlabeled)."""
    labeled_split: str = "train"
    """Labelled training images for the linear probe and the kNN bank."""
    test_split: str = "test"
    train_subset: int | None = Field(None, ge=1)
    """Positives and SSL train on this many images of ``train_split`` (a class-stratified draw fixed by
    ``split_seed`` when the split is labelled, else its first images); None: all of it. The DDPM always trains on the
    whole split, and the probes always use the whole ``labeled_split``. For CPU budgets (Fashion-MNIST: 10,000)."""
    download: bool = False
    """Allow torchvision to download CIFAR/STL-10 into ``root`` (machines with internet only)."""
    skip_bad_images: bool = False
    """folder: skip unreadable files with a warning instead of stopping."""
    max_image_pixels: int = Field(89_478_485, ge=1)
    """folder and ``--input``: image files with more pixels are refused from their header, before decoding (a
    decompression-bomb guard; Pillow's own default). Bombs are refused even with skip_bad_images."""
    cache_dir: Path | None = None
    """folder and torchvision: where each split is decoded once into a memory-mapped uint8 ``.npy`` that every stage
    and run maps read-only (``clsp.data.cache``); keyed on the file list (sizes, mtimes) or the torchvision class and
    root, and the resize rule. A config loaded from YAML defaults it to ``<run.output_dir>/../data-cache``; None on a
    bare ``DataConfig``: decoded into memory."""
    decode_workers: int = Field(0, ge=0)
    """Processes that decode a folder or torchvision split into the cache; 0: one per core."""
    test_fraction: float = Field(0.25, gt=0, lt=1)
    """digits and a labelled one-split folder: fraction of each class's images in the stratified test split."""
    split_seed: int = Field(0, ge=0)
    """digits and a labelled one-split folder: seed of the stratified train/test split."""

    @property
    def source_name(self) -> str:
        """``source``, with the torchvision class: ``torchvision DTD``."""
        return f"{self.source} {self.dataset}" if self.dataset else self.source

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names ``source`` (and ``dataset``) has."""
        if self.source == "torchvision" and self.dataset in TORCHVISION_SPLITS:
            own = TORCHVISION_SPLITS[self.dataset]
            return ("train", "test", "all") if own is None else tuple(own)
        return SPLITS[self.source]

    @model_validator(mode="before")
    @classmethod
    def _source_defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        source = raw.get("source", "digits")
        if source == "digits":
            raw.setdefault("image_size", 16)
        return raw

    @model_validator(mode="after")
    def _check_source(self) -> "DataConfig":
        if (self.source == "torchvision") != (self.dataset is not None):
            raise ValueError(
                "dataset names the torchvision class for source torchvision"
                if self.dataset is not None
                else "source torchvision needs dataset: a torchvision.datasets class, e.g. dataset: DTD"
            )
        if self.source == "torchvision" and self.dataset not in TORCHVISION_SPLITS:
            hint = {"CIFAR10": "cifar10", "CIFAR100": "cifar100", "STL10": "stl10"}.get(str(self.dataset))
            raise ValueError(
                f"dataset {self.dataset!r}: "
                + (f"use source: {hint} (clsp's own reader; torchvision's unpickles)" if hint else "not supported")
                + f"; supported: {', '.join(TORCHVISION_SPLITS)}"
            )
        valid = self.splits
        for field in ("train_split", "labeled_split", "test_split"):
            if getattr(self, field) not in valid:
                raise ValueError(
                    f"{field} {getattr(self, field)!r} is not a split of {self.source_name}; use one of {list(valid)}"
                )
        if self.labeled_split == self.test_split:
            raise ValueError(
                f"labeled_split and test_split are both {self.test_split!r}: the probes would be scored on the images "
                "they are fit on; set test_split to a held-out split"
            )
        if "all" in (self.labeled_split, self.test_split):
            raise ValueError("labeled_split and test_split are train, val or test ('all' holds the test images too)")
        if self.roots is not None:
            if self.source != "folder":
                raise ValueError(f"roots is for source folder, not {self.source!r}; set data.root instead")
            if self.root is not None:
                raise ValueError("set data.root or data.roots, not both")
            if "train" not in self.roots:
                raise ValueError("roots needs a train folder (roots.train)")
        elif self.source not in ("digits", "fashion_mnist", "mnist") and self.root is None:
            raise ValueError(f"root is required for source {self.source!r}: set data.root to the dataset folder")
        return self


class DiffusionConfig(Section):
    unet: str = "ddpm-cifar"
    """What `clsp diffusion train` trains: a preset name (ddpm-cifar, ddpm-stl64, small, tiny), or a local diffusers
    UNet2DModel folder to fine-tune (positives sample from such a folder directly when nothing was trained)."""
    pretrained: str | None = None
    """A trained UNet to generate positives with when ``<output_dir>/unet`` was not trained: a shipped name
    (``digits-pretrained``) or a UNet2DModel folder. ``clsp demo`` then skips DDPM training (``--train-diffusion``
    trains ``unet`` from scratch with this section's recipe instead). None: train first."""
    image_size: int | None = Field(None, ge=4, le=1024)
    """Resize the training images to this size for diffusion and positives (STL-10: 96 -> 64); None = as loaded."""
    dropout: float | None = Field(None, ge=0, lt=1)
    """None keeps the preset's dropout (ddpm-cifar 0.1, ddpm-stl64 0.15)."""
    num_train_timesteps: int = Field(1000, ge=2)
    beta_start: PositiveFloat = 1e-4
    beta_end: PositiveFloat = 0.02
    epochs: int = Field(2000, ge=1)
    batch_size: int = Field(128, ge=1)
    """Per process."""
    lr: PositiveFloat = 2e-4
    warmup_steps: int = Field(5000, ge=0)
    grad_clip: PositiveFloat = 1.0
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    hflip: bool = True
    mixed_precision: Precision = "no"
    save_every_epochs: int = Field(200, ge=1)
    """Save the Accelerate resume state every this many epochs (and at the end, and on Ctrl-C)."""
    num_samples: int = Field(64, ge=0)
    """Unconditional samples drawn into ``diffusion/samples.png`` after training (0: none)."""

    @model_validator(mode="after")
    def _check_betas(self) -> "DiffusionConfig":
        if not self.beta_start < self.beta_end < 1:
            raise ValueError(f"need beta_start < beta_end < 1, got {self.beta_start} and {self.beta_end}")
        return self


Backend = Literal["torch", "ort", "torchscript", "pt2", "trt"]
"""What runs an exported model: torch (the module itself), ONNX Runtime, TorchScript, pt2 (AOTInductor), TensorRT."""
BACKENDS: tuple[str, ...] = get_args(Backend)


class PositivesConfig(Section):
    num_candidates: int = Field(8, ge=1)
    """k: synthetic positives per training image."""
    weight: float = Field(0.1, ge=0, le=1)
    """w: weight of the random sample's features; 1 - w goes to the anchor (w=1: unconditional)."""
    num_steps: int = Field(100, ge=1)
    eta: float = Field(0.1, ge=0)
    num_layers: int = Field(1, ge=1)
    """1 blends the bottleneck only; L also blends the L-1 deepest skip tensors."""
    anchor_noise: Literal["fresh", "shared"] = "fresh"
    """fresh (the paper): the anchor is re-noised with new noise at every step; shared: with the sample's own
    x_T at every step, so the anchor's and the sample's features carry the same noise (a clsp option)."""
    solver: Literal["ddim", "dpm-solver++"] = "ddim"
    batch_size: int = Field(256, ge=1)
    shard_size: int = Field(1024, ge=1)
    seed: int = Field(0, ge=0, lt=2**64)
    """Key of the counter-based noise (clsp.diffusion.noise): with the image and candidate index, it fixes every
    positive."""
    backend: Backend = "torch"
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    """bf16 runs the denoiser under autocast: about 2x faster where the device has bf16 units (a CUDA GPU with bf16,
    a CPU with AVX512-BF16 or AMX), a UNet forward 11-27x slower where it does not (AVX2-only CPUs emulate it).
    ``auto`` is bf16 where the device has them and fp32 elsewhere; a store records the precision it was made in."""
    compile: bool = False
    """torch backend only: torch.compile the denoiser (on CUDA with mode reduce-overhead, i.e. CUDA graphs).
    Compiling takes tens of seconds and recompiles for a new batch size; worth it for long runs on a GPU."""

    @model_validator(mode="after")
    def _check_compile(self) -> "PositivesConfig":
        if self.compile and self.backend != "torch":
            raise ValueError(f"compile applies to the torch backend only; set compile false for {self.backend}")
        return self


class AugmentConfig(Section):
    crop_size: int | None = Field(None, ge=4)
    """RandomResizedCrop output size; None = the image size."""
    crop_scale: tuple[float, float] = (0.08, 1.0)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    """brightness, contrast, saturation, hue."""
    color_jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    solarize_p: float = Field(0.0, ge=0, le=1)
    hflip_p: float = Field(0.5, ge=0, le=1)
    mean: tuple[float, ...] | None = None
    """Normalisation; None = the dataset's statistics."""
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _check_ranges(self) -> "AugmentConfig":
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale needs 0 < low <= high <= 1, got {self.crop_scale}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("set both mean and std, or neither")
        return self


class SSLConfig(Section):
    method: Literal[SSL_METHODS] = "simclr"  # type: ignore[valid-type]
    clsp_weight: float = Field(1.0, ge=0)
    """λ of the CLSP alignment term; 0 trains the baseline."""
    positive: Literal["synthetic", "real"] = "synthetic"
    """synthetic: a stored candidate; real: the ablation's third real view."""
    num_candidates: int = Field(8, ge=1)
    """Draw the synthetic candidate among the first this-many stored ones."""
    positives: Path | None = None
    """Positive store folder; None = <output_dir>/positives."""
    backbone: Literal["resnet18", "resnet50", "small-cnn"] = "resnet18"
    stem: Literal["cifar", "stl"] = "cifar"
    projector_hidden_dim: int = Field(4096, ge=1)
    projector_dim: int = Field(256, ge=1)
    temperature: PositiveFloat = 0.2
    batch_size: int = Field(1024, ge=2)
    """Global batch over all processes."""
    epochs: int = Field(1000, ge=1)
    lr: PositiveFloat = 0.5
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(10, ge=0)
    warmup_start_lr: float = Field(1e-3, ge=0)
    min_lr: float = Field(0.0, ge=0)
    moco_momentum_start: float = Field(0.99, ge=0, le=1)
    moco_momentum_end: float = Field(0.999, ge=0, le=1)
    queue_size: int = Field(32768, ge=1)
    nnclr_support_size: int = Field(65536, ge=1)
    """NNCLR's FIFO support set of past projections (solo-learn's CIFAR recipe: 65,536, 1.3x the 50,000 images)."""
    nnclr_predictor_hidden_dim: int = Field(4096, ge=1)
    """NNCLR's prediction head: Linear(projector_dim -> this), BatchNorm, ReLU, Linear(-> projector_dim) (solo-learn)."""
    augment: AugmentConfig = AugmentConfig()
    probe_lr: PositiveFloat = 0.1
    """Online linear probe (on detached features, labelled data only): constant SGD lr, momentum 0.9, no decay."""
    mixed_precision: Precision = "no"
    bn_groups: Literal["per_view", "joint"] = "per_view"
    """BatchNorm batch statistics. per_view: each view (v1, v2, the synthetic or real third) is normalised with its
    own statistics, one backbone pass per view: the reference's MoCo (one forward pass per view, method.md 3.4) and
    the closest one-process match for its SimCLR, whose 3B batch [v1; v2; s] is split by DataParallel into contiguous
    per-GPU chunks, so on 4 GPUs the synthetic third is normalised mostly on its own (method.md 3.3); NNCLR is not in
    the reference and follows them. joint: one pass over all views, shared statistics (the reference SimCLR on one
    GPU)."""
    sync_bn: bool = False
    """BatchNorm statistics over all processes' batches (the reference uses per-GPU BN)."""
    num_workers: int = Field(4, ge=0)
    """DataLoader worker processes per training process."""
    save_every_epochs: int = Field(100, ge=1)
    """Save the Accelerate resume state every this many epochs (and at the end)."""
    tensorboard: bool = False
    """Also log the per-epoch metrics to TensorBoard (<output_dir>/ssl/tensorboard; needs the tensorboard package)."""


MEAN_PER_CLASS_TARGETS = ("FGVCAircraft", "Caltech101", "Flowers102", "OxfordIIITPet")
"""torchvision classes whose transfer metric is mean per-class accuracy (class-imbalanced; the protocol's choice)."""


class TransferTarget(Section):
    """One dataset a run's frozen encoder is transferred to (``clsp transfer``, docs/transfer.md)."""

    data: DataConfig
    """Its source, root and splits: ``labeled_split`` is the protocol's training split, ``test_split`` its test;
    its ``val`` split, when it has one, is the validation split, else a random 20 % of the training split."""
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+-]+$")
    """Label in tables and the feature cache's folder name; None: the source (``torchvision``: the class)."""
    metric: Literal["auto", "top1", "mean_per_class"] = "auto"
    """What C is chosen by and the table leads with; auto: mean per-class accuracy for
    :data:`MEAN_PER_CLASS_TARGETS`, top-1 otherwise."""
    max_train: int | None = Field(None, ge=10)
    """Fit the protocol on this many images of the training split (a random draw, seed 0) to fit a CPU budget;
    None: all. Validation and test splits are never subsampled."""

    @property
    def label(self) -> str:
        return self.name or str(self.data.dataset or self.data.source)

    @property
    def chosen_metric(self) -> Literal["top1", "mean_per_class"]:
        if self.metric != "auto":
            return self.metric
        return "mean_per_class" if self.data.dataset in MEAN_PER_CLASS_TARGETS else "top1"


class EvalConfig(Section):
    online_probe: bool = True
    image_size: int | None = Field(None, ge=4, le=1024)
    """Resize the labelled and test images to this size for the linear probe and kNN; None = the encoder's input
    size (``image_size`` in ``ssl/backbone.json``: ``ssl.augment.crop_size``, or the training image size), so
    STL-10's 96-px images are evaluated at the 64 px the encoder was trained on (method.md 4.2). The alignment
    term is always measured at the encoder's input size."""
    linear_epochs: int = Field(100, ge=1)
    linear_lr: PositiveFloat = 1.0
    linear_milestones: tuple[Annotated[int, Field(ge=1)], ...] = (60, 80)
    linear_batch_size: int = Field(256, ge=1)
    knn_k: tuple[Annotated[int, Field(ge=1)], ...] = Field((5, 10, 20, 50, 100, 200), min_length=1)
    knn_k_fixed: int = Field(20, ge=1)
    """Reported beside the best k, which is picked on the test set and therefore optimistic."""
    knn_temperature: PositiveFloat = 0.07
    label_fractions: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.01, 0.1)
    """Label-efficient evaluation (SimCLR §7 style): probe and kNN from these class-balanced fractions of the
    labelled split (at least one image per class); () turns it off."""
    label_draws: int = Field(5, ge=1)
    """Label subsets drawn per fraction (fixed by run.seed); accuracies are their mean ± std."""
    embedding_plot: Literal["pca", "tsne"] = "pca"
    transfer: tuple[TransferTarget, ...] = ()
    """Datasets ``clsp transfer`` evaluates on when no ``--target`` is given (docs/transfer.md)."""

    @model_validator(mode="after")
    def _distinct_transfer_names(self) -> "EvalConfig":
        labels = [target.label for target in self.transfer]
        if len(set(labels)) < len(labels):
            raise ValueError(f"transfer targets need distinct names (got {labels}); set name: on each")
        return self


class ExportConfig(Section):
    formats: tuple[Literal["onnx", "torchscript", "pt2", "trt"], ...] = ("onnx", "torchscript")
    opset: int = Field(18, ge=18)
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(64, ge=1)
    max_batch: int = Field(256, ge=1)
    trt_precision: Literal["fp32", "fp16", "bf16"] = "fp16"
    check: bool = True
    """Compare every new artifact with the PyTorch module on fresh random inputs; fail above the tolerance."""
    rtol: PositiveFloat = 1e-4
    """Parity tolerance: max |artifact - torch| / max |torch| per output."""
    trt_rtol: PositiveFloat = 2e-2
    """Parity tolerance of fp16/bf16 TensorRT engines (fp32 engines use rtol)."""

    @model_validator(mode="after")
    def _check_batches(self) -> "ExportConfig":
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        return self


class DemoConfig(Section):
    methods: tuple[Literal[DEMO_METHODS], ...] = Field(("simclr", "clsp-simclr", "simclr-real3"), min_length=1)  # type: ignore[valid-type]
    """Rows of ``clsp demo`` (``--methods`` overrides), trained with the same budget and seeds; every CLSP row is
    compared with every row without CLSP. No stage depends on it: a rerun with more rows reuses the others."""

    @model_validator(mode="after")
    def _check_methods(self) -> "DemoConfig":
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must list distinct rows, got {list(self.methods)}")
        return self


class Config(Section):
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    positives: PositivesConfig = PositivesConfig()
    ssl: SSLConfig = SSLConfig()
    eval: EvalConfig = EvalConfig()
    export: ExportConfig = ExportConfig()
    demo: DemoConfig = DemoConfig()

    @property
    def layout(self) -> RunLayout:
        """The stage folders below ``run.output_dir``."""
        return RunLayout(self.run.output_dir)

    @property
    def positives_store(self) -> Path:
        """The positive store the run generates into and trains with: ``ssl.positives``, else
        ``<output_dir>/positives``."""
        return self.ssl.positives or self.layout.positives

    @model_validator(mode="after")
    def _cache_beside_the_runs(self) -> "Config":
        for data in (self.data, *(target.data for target in self.eval.transfer)):
            if data.cache_dir is None and data.source in CACHED_SOURCES:
                data.cache_dir = self.run.output_dir.parent / "data-cache"
        return self


UNRECORDED_DATA_FIELDS = ("cache_dir", "decode_workers")
"""Data settings that decide where and how fast images are decoded, not which: never part of a stage's settings."""
RESOLVED_CONFIG_NAME = "config.yaml"
MAX_CONFIG_BYTES = 1 << 20
"""A config is a few kilobytes; a larger file is refused before it is parsed."""
MAX_CONFIG_VALUES = 100_000
"""Values a config may hold once YAML aliases are expanded (an alias bomb is refused before validation)."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _ConfigLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = lines.setdefault(key, line)
        except TypeError:  # an unhashable key: construct_mapping below reports it
            continue
        if first != line:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {first} and {line}); keep one", key_node.start_mark
            )
    return loader.construct_mapping(node, deep)


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _expanded_size(value: Any, sizes: dict[int, int]) -> int:
    """How many values ``value`` holds with every shared (aliased) list or mapping counted each time it appears;
    linear in the distinct objects (``sizes`` memoises them)."""
    if not isinstance(value, dict | list):
        return 1
    if id(value) not in sizes:
        children = value.values() if isinstance(value, dict) else value
        sizes[id(value)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(value)]


def parse_override(override: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and YAML-parsed value (``a.b=[1,2]`` -> ``[1, 2]``)."""
    key, sep, raw = override.partition("=")
    keys = key.strip().split(".")
    if not sep or len(keys) < 2 or not all(keys):
        raise ClspError(f"--set {override!r}: expected section.key=value, e.g. --set ssl.epochs=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ClspError(f"--set {override!r}: the value is not valid YAML ({e.problem})") from None
    return keys, value


def _apply_override(raw: dict, keys: list[str], value: Any, override: str) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise ClspError(f"--set {override!r}: {where} is a value, not a section")
        node = child
    node[keys[-1]] = value


def _describe(error: dict[str, Any]) -> str:
    """One validation error as ``field: what is wrong``."""
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        parent_model: type[BaseModel] = Config
        for part in error["loc"][:-1]:
            if isinstance(part, int):  # an item of a list of sections (eval.transfer)
                continue
            annotation = parent_model.model_fields[str(part)].annotation
            parent_model = get_args(annotation)[0] if get_args(annotation) else annotation  # type: ignore[assignment]
        return f"unknown key '{loc}' (valid keys here: {', '.join(parent_model.model_fields)})"
    if error["type"] == "value_error":  # raised by a section's own cross-field check; names its fields
        return f"{loc or 'config'}: {error['msg'].removeprefix('Value error, ')}"
    return f"{loc}: {error['msg']} (got {shorten(repr(error['input']))})"


def _format_error(source: str, err: ValidationError) -> str:
    """Every error of ``err`` on one line, each naming its field, then how to fix a wrong value."""
    errors = err.errors()
    settable = [".".join(map(str, e["loc"])) for e in errors if e["type"] not in ("extra_forbidden", "value_error")]
    described = "; ".join(_describe(e) for e in errors)
    head = f"{source}: " if len(errors) == 1 else f"{source}: {len(errors)} errors: "
    if not settable:
        return head + described
    key = settable[0] if len(settable) == 1 else "section.key"
    return f"{head}{described}; fix {'it' if len(errors) == 1 else 'them'} in the file or with --set {key}=..."


def config_from_dict(raw: dict, source: str = "config", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate a raw mapping (after applying ``section.key=value`` overrides) into a :class:`Config`."""
    if not isinstance(raw, dict):
        raise ClspError(f"{source}: the top level must be a mapping of sections (run, data, diffusion, ...)")
    for override in overrides:
        keys, value = parse_override(override)
        _apply_override(raw, keys, value, override)
    if _expanded_size(raw, {}) > MAX_CONFIG_VALUES:
        raise ClspError(
            f"{source}: holds more than {MAX_CONFIG_VALUES} values once its YAML aliases are expanded; a config "
            "needs a few dozen: remove the repeated aliases or long lists"
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ClspError(_format_error(source, e)) from None


def shipped_configs() -> dict[str, Path]:
    """The configs installed with the package (``configs/`` of the repository), by name: ``{"digits": path, ...}``."""
    folder = Path(str(importlib.resources.files("clsp.configs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config_path(path: str | Path) -> Path:
    """``path`` when it exists; else, for a bare name or a ``configs/<name>.yaml`` that is not here (a folder outside
    the repository), the shipped config of that name; else ``path`` unchanged (and the caller reports it missing)."""
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("configs")) or path.suffix not in ("", ".yaml"):
        return path
    return shipped_configs().get(path.stem, path)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load and validate a YAML config; ``overrides`` are ``section.key=value`` strings applied first.

    Also refuses a ``run.output_dir`` that cannot be a folder (it, or a parent, is a file).
    """
    path = resolve_config_path(path)
    if path.is_dir():
        raise ClspError(f"config '{path}' is a folder; pass a YAML file such as configs/digits.yaml")
    if not path.is_file():
        raise ClspError(
            f"config file '{path}' not found; pass a YAML file or a shipped config: {', '.join(shipped_configs())}"
        )
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ClspError(f"{path}: {size} bytes; a config may have at most {MAX_CONFIG_BYTES} (they are a few KB)")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader) or {}
    except UnicodeDecodeError as e:
        raise ClspError(f"{path}: not a text file (byte {e.start} is not UTF-8); pass a YAML config") from None
    except OSError as e:
        raise ClspError(f"{path}: cannot be read ({e.strerror}); check the file and its permissions") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or " ".join(str(e).split())
        raise ClspError(f"{path}: not valid YAML{where}: {problem}") from None
    cfg = config_from_dict(raw, str(path), overrides)
    blocking = file_in_the_way(cfg.run.output_dir)
    if blocking is not None:
        what = "a symlink to nothing" if blocking.is_symlink() and not blocking.exists() else "a file"
        raise ClspError(
            f"{path}: run.output_dir '{cfg.run.output_dir}' cannot be a folder: '{blocking}' is {what}; "
            "set another one with --set run.output_dir=..."
        )
    return cfg


def config_to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML; :func:`load_config` reads it back to an equal :class:`Config`."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_resolved_config(cfg: Config, directory: str | Path) -> Path:
    """Write the resolved config as ``directory/config.yaml`` (atomically) and return its path."""
    return atomic_write_text(Path(directory) / RESOLVED_CONFIG_NAME, config_to_yaml(cfg))
