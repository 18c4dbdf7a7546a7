"""Label-efficient probe cost: one evaluation's 1 % and 10 % linear probes and kNN on Fashion-MNIST-sized features.

A whole command, for an A/B against another checkout (``PYTHONPATH=<other checkout>``): the probes of
``configs/fashion_mnist.yaml`` (30 epochs' worth of SGD steps, lr 1.0, milestones 18/24, batch 256, flips) on
60,000 x 256 training and 10,000 test features (the small CNN's width) drawn as noisy class clusters, so that the
accuracies it prints show whether two checkouts take the same steps. Prints seconds and accuracies.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/probe_throughput.py --draws 1 --threads 1
"""

import argparse
import time

import torch

from clsp.evaluation.label_efficient import label_efficient_eval


def clusters(generator: torch.Generator, centres: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, len(centres), (n,), generator=generator)
    return centres[labels] + 3 * torch.randn(n, centres.shape[1], generator=generator), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=1, help="label draws per fraction (the benchmark runs 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 256, generator=generator)
    train, train_labels = clusters(generator, centres, 60_000)
    train_flipped = train + 0.3 * torch.randn(train.shape, generator=generator)
    test, test_labels = clusters(generator, centres, 10_000)
    started = time.perf_counter()
    results = label_efficient_eval(
        train, train_labels, test, test_labels, train_features_flipped=train_flipped, fractions=(0.01, 0.1),
        draws=args.draws, seed=0, epochs=30, lr=1.0, milestones=(18, 24), batch_size=256, knn_k=20,
        knn_temperature=0.07,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    accuracies = ", ".join(
        f"linear {k} {v['linear_top1']:.2f}, kNN {k} {v['knn_top1']:.2f}" for k, v in results.items()
    )
    print(f"{seconds:.2f} s; {accuracies}")


if __name__ == "__main__":
    main()
