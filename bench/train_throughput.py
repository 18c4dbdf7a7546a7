"""SSL training throughput: the real data pipeline vs the same steps on pre-loaded tensors.

ResNet-18 (CIFAR stem), CIFAR-shaped 32x32x3 images, CLSP-SimCLR (v1, v2 and a synthetic candidate from a positive
store), batch 256, SGD. Both modes run the same step; "pipeline" feeds it from :class:`MultiViewDataset` through a
DataLoader (uint8 -> three augmentation draws per image -> collate, which augments each view batch at once),
"pre-loaded" repeats one ready batch. Images and candidates are random uint8 (speed does not depend on content).
Single process, fp32 unless --bf16, CPU unless --device cuda.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/train_throughput.py --steps 3 --workers 0 2
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/train_throughput.py --steps 5 --workers --bn-groups per_view joint
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from clsp.config import SSLConfig
from clsp.contrastive.methods import build_method
from clsp.contrastive.views import MultiViewDataset
from clsp.data.augment import DATASET_STATS, Augmentation
from clsp.loop import GlobalBatchSampler
from clsp.positives.store import PositiveStore


def make_dataset(root: Path, n: int, k: int) -> MultiViewDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    store = PositiveStore.create(
        root, n=n, num_candidates=k, image_shape=(32, 32, 3), dataset_fingerprint="bench", provenance={},
        shard_size=1024,
    )  # fmt: skip
    for index in store.missing_shards():
        rows = len(store.shard_rows(index))
        store.write_shard(index, rng.integers(0, 256, (rows, k, 32, 32, 3), dtype=np.uint8))
    cfg = SSLConfig()
    augmentation = Augmentation(cfg.augment, 32, *DATASET_STATS["cifar10"])
    return MultiViewDataset(images, None, augmentation, 0, "synthetic", store, k)


def run(batches, steps: int, batch_size: int, bf16: bool, device: torch.device, bn_groups: str) -> list[float]:
    """Images per second (3 views each) of each of ``steps`` timed steps after one warm-up step."""
    torch.manual_seed(0)
    model = build_method(SSLConfig(bn_groups=bn_groups), 3, None).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rates = []
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        views = [batch[k].to(device, non_blocking=True) for k in ("v1", "v2", "v3")]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(views)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if i > 0:
            rates.append(3 * batch_size / (now - start))
        start = now
        if i == steps:
            break
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader workers to try")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--data-only", action="store_true", help="only time one batch of the data pipeline")
    parser.add_argument(
        "--bn-groups", nargs="+", default=["per_view"], help="ssl.bn_groups to time on the pre-loaded batch"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} x 3 views 32x32")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp) / "positives", n=4 * args.batch_size, k=8)
        total = args.steps + 1

        def loader(workers: int) -> DataLoader:
            sampler = GlobalBatchSampler(len(dataset), args.batch_size, 0, 1, 0, 0, total)
            return DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate, num_workers=workers)

        started = time.perf_counter()
        fixed = next(iter(loader(0)))
        print(f"data pipeline alone, 0 workers: {time.perf_counter() - started:.2f} s per batch")
        if args.data_only:
            return
        step = dict(steps=args.steps, batch_size=args.batch_size, bf16=args.bf16, device=device)
        results = {
            f"pre-loaded, bn_groups {groups}": run(iter(lambda: fixed, None), bn_groups=groups, **step)
            for groups in args.bn_groups
        }
        for workers in args.workers:
            results[f"pipeline, {workers} workers"] = run(loader(workers), bn_groups=args.bn_groups[0], **step)
    base = statistics.median(next(iter(results.values())))
    print("| mode | images/s (median) | per-step images/s | overhead vs the first |")
    print("|---|---|---|---|")
    for name, rates in results.items():
        median = statistics.median(rates)
        per_step = ", ".join(f"{r:.0f}" for r in rates)
        print(f"| {name} | {median:.0f} | {per_step} | {100 * (base / median - 1):+.1f}% |")


if __name__ == "__main__":
    main()
