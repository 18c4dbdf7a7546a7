"""Learning-rate and MoCo-momentum schedules (method.md 3.4, 3.5)."""

import math


def learning_rate(
    epoch: int, base_lr: float, epochs: int, warmup_epochs: int, warmup_start_lr: float, min_lr: float
) -> float:
    """The reference's per-epoch schedule: linear warm-up from ``warmup_start_lr`` (epoch 0) to ``base_lr``
    (epoch ``warmup_epochs - 1``), then cosine from ``base_lr`` (epoch ``warmup_epochs``) towards ``min_lr``
    at epoch ``epochs``.

    With the paper's 10 warm-up and 1000 epochs: ``lr_e = 1e-3 + e (base - 1e-3) / 9`` for e < 10 and
    ``½ base (1 + cos(π (e - 10) / 990))`` for e ≥ 10.
    """
    if epoch < warmup_epochs:
        return warmup_start_lr + epoch * (base_lr - warmup_start_lr) / max(warmup_epochs - 1, 1)
    progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def moco_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Key-encoder momentum at optimizer step ``step`` of ``total_steps``: cosine from ``start`` (step 0) to
    ``end``, ``m = end - (end - start) (cos(π step / total) + 1) / 2``."""
    return end - (end - start) * (math.cos(math.pi * step / total_steps) + 1) / 2
