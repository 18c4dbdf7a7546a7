"""Weighted kNN classification on frozen features (method.md 4.3; solo-learn's WeightedKNNClassifier)."""

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    ks: tuple[int, ...],
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Top-1 accuracy (%) of the cosine kNN vote for every k in ``ks``.

    Features are float ``[N, D]`` (L2-normalised here); labels int64 ``[N]``. Each of the k nearest training
    features votes for its class with weight ``exp(cos / temperature)``; the class with the largest sum wins.
    Test features are processed ``chunk_size`` at a time, so memory stays ``O(chunk_size * N_train)``.
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k_max = min(max(ks), len(train))
    correct = dict.fromkeys(ks, 0)
    for start in range(0, len(test), chunk_size):
        similarity = test[start : start + chunk_size] @ train.T
        top_sim, top_idx = similarity.topk(k_max, dim=1)
        votes = (top_sim / temperature).exp()
        neighbour_labels = train_labels[top_idx]
        truth = test_labels[start : start + chunk_size]
        for k in ks:
            scores = torch.zeros(len(truth), num_classes, device=votes.device)
            scores.scatter_add_(1, neighbour_labels[:, :k], votes[:, :k])
            correct[k] += (scores.argmax(1) == truth).sum().item()
    return {k: 100.0 * correct[k] / len(test) for k in ks}
