"""The linear probe (method.md 4.2): a linear classifier on frozen features, final-epoch top-1/top-5.

The backbone is frozen and in eval mode, so the features of an image and of its mirror image are fixed. The
probe caches both once and draws the flip per sample and epoch from the cache: exactly the spec's flip-only
augmentation, without running the backbone every epoch.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsp.progress import progress_bar


@dataclass(frozen=True)
class ProbeResult:
    top1: float
    """Final-epoch test top-1 accuracy, %."""
    top5: float
    train_loss: list[float] = field(default_factory=list)
    """Mean training cross-entropy per epoch."""


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """% of rows whose label is among the ``k`` largest logits (``k`` capped at the class count)."""
    k = min(k, logits.shape[1])
    return 100.0 * (logits.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean().item()


def train_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    train_features_flipped: Tensor | None,
    epochs: int,
    lr: float,
    milestones: tuple[int, ...],
    batch_size: int,
    seed: int = 0,
    show_progress: bool = True,
) -> ProbeResult:
    """Train Linear(D -> classes) with SGD (no momentum, no weight decay), lr x0.1 at each milestone epoch.

    Features are float ``[N, D]``, labels int64 ``[N]``. With ``train_features_flipped`` (the features of the
    mirrored training images) each sample is flipped with probability 1/2 per epoch; None trains without flips.
    """
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    torch.manual_seed(seed)
    device = train_features.device  # random draws stay on the CPU, so every device sees the same ones
    head = nn.Linear(train_features.shape[1], num_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=0.1)
    losses = []
    with progress_bar() as progress:
        task = progress.add_task("linear probe", total=epochs, visible=show_progress)
        for _ in range(epochs):
            order = torch.randperm(len(train_features), generator=generator).to(device)
            if train_features_flipped is None:
                features = train_features
            else:
                flip = (torch.rand(len(train_features), generator=generator) < 0.5).to(device)
                features = torch.where(flip[:, None], train_features_flipped, train_features)
            total = torch.zeros((), device=device)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(head(features[idx]), train_labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(idx)
            schedule.step()
            losses.append(total.item() / len(order))  # one host sync per epoch
            progress.advance(task)
    with torch.no_grad():
        logits = head(test_features)
    return ProbeResult(topk_accuracy(logits, test_labels, 1), topk_accuracy(logits, test_labels, 5), losses)
