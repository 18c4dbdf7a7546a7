"""SSL augmentation cost per batch: clsp's batched T against torchvision's v2 pipeline run one view at a time.

The baseline is what a user writes (and what clsp ran until it batched T): ``v2.Compose([RandomResizedCrop,
RandomApply(ColorJitter), RandomHorizontalFlip, RandomGrayscale, ToDtype, Normalize])`` called on each uint8 view.
clsp's side is what a DataLoader worker does for one batch: :class:`~clsp.contrastive.views.MultiViewDataset`'s
items (one keyed ``torch.rand`` each) and its ``collate`` (:class:`~clsp.data.augment.Augmentation` on each view
batch), three views per image (the control's: two real views and a third real one). One thread (as in a DataLoader
worker), random uint8 images (cost does not depend on content), one batch of 256 images x 3 views; median of
``--repeats`` timings after a warm-up.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/augment_throughput.py
"""

import argparse
import statistics
import time

import numpy as np
import torch
from torchvision.transforms import v2

from clsp.config import AugmentConfig
from clsp.contrastive.views import MultiViewDataset
from clsp.data.augment import Augmentation

VIEWS = 3
CASES = {  # name: (channels, image size, crop scale); the crop scales of configs/digits.yaml and fashion_mnist.yaml
    "digits 16 px grey": (1, 16, (0.3, 1.0)),
    "Fashion-MNIST 28 px grey": (1, 28, (0.2, 1.0)),
    "CIFAR 32 px RGB": (3, 32, (0.08, 1.0)),
}


def torchvision_pipeline(cfg: AugmentConfig, size: int, channels: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True),
            v2.RandomApply([v2.ColorJitter(*cfg.color_jitter)], p=cfg.color_jitter_p),
            v2.RandomHorizontalFlip(cfg.hflip_p),
            v2.RandomGrayscale(cfg.grayscale_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * channels, [0.25] * channels),
        ]
    )


def seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    b = args.batch_size
    print(f"torch {torch.__version__}, 1 thread, {b} images x {VIEWS} views, median of {args.repeats}")
    print("| case | torchvision v2, one view at a time | clsp batched | speed-up |")
    print("|---|---|---|---|")
    for name, (channels, size, scale) in CASES.items():
        cfg = AugmentConfig(crop_scale=scale)
        images = np.random.default_rng(0).integers(0, 256, (b, size, size, channels), dtype=np.uint8)
        per_view = torchvision_pipeline(cfg, size, channels)
        augmentation = Augmentation(cfg, size, (0.5,) * channels, (0.25,) * channels)
        dataset = MultiViewDataset(images, None, augmentation, 0, "real")

        def one_at_a_time(images=images, per_view=per_view) -> None:
            for image in torch.from_numpy(images).permute(0, 3, 1, 2):
                for _ in range(VIEWS):
                    per_view(image)

        def clsp_batched(dataset=dataset) -> None:
            dataset.collate([dataset[(0, i)] for i in range(len(dataset))])

        base, ours = seconds(one_at_a_time, args.repeats), seconds(clsp_batched, args.repeats)
        print(f"| {name} | {1e3 * base:.0f} ms | {1e3 * ours:.1f} ms | {base / ours:.1f}x |")


if __name__ == "__main__":
    main()
