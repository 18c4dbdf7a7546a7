"""The linear probe (method.md 4.2): a linear classifier on frozen features, final-epoch top-1/top-5.

The backbone is frozen and in eval mode, so the features of an image and of its mirror image are fixed. The
probe caches both once and draws the flip per sample and epoch from the cache: exactly the spec's flip-only
augmentation, without running the backbone every epoch.
"""

from dataclasses import dataclass, field

import torch
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
    init = nn.Linear(train_features.shape[1], num_classes)  # torch's default initialisation
    weight, bias = init.weight.detach().to(device), init.bias.detach().to(device)
    losses = []
    # scatter_add_'s -1 per row (a short last batch reads its first rows)
    minus_one = torch.full((batch_size, 1), -1.0, dtype=weight.dtype, device=device)
    # The cross-entropy gradient by hand, (softmax - one-hot) / batch: the same SGD steps as autograd and
    # torch.optim.SGD, at two thirds of their per-step overhead (the label-efficient probes take ~70,000 small steps).
    with progress_bar() as progress, torch.no_grad():
        task = progress.add_task("linear probe", total=epochs, visible=show_progress)
        for epoch in range(epochs):
            epoch_lr = lr * 0.1 ** sum(epoch >= m for m in milestones)
            order = torch.randperm(len(train_features), generator=generator).to(device)
            if train_features_flipped is None:
                features = train_features
            else:
                flip = (torch.rand(len(train_features), generator=generator) < 0.5).to(device)
                features = torch.where(flip[:, None], train_features_flipped, train_features)
            # One gather per epoch: each minibatch is then a contiguous slice, the same rows in the same order.
            features, labels = features[order], train_labels[order, None]
            total = torch.zeros((), device=device)
            for start in range(0, len(order), batch_size):
                batch, targets = features[start : start + batch_size], labels[start : start + batch_size]
                log_probs = torch.addmm(bias, batch, weight.t()).log_softmax(1)
                total -= log_probs.gather(1, targets).sum()
                grad = log_probs.exp_().scatter_add_(1, targets, minus_one)
                grad /= len(targets)
                weight.addmm_(grad.t(), batch, alpha=-epoch_lr)
                bias.sub_(grad.sum(0), alpha=epoch_lr)
            losses.append(total.item() / len(order))  # one host sync per epoch
            progress.advance(task)
        logits = torch.addmm(bias, test_features, weight.t())
    return ProbeResult(topk_accuracy(logits, test_labels, 1), topk_accuracy(logits, test_labels, 5), losses)
