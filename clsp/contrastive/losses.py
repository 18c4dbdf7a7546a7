"""Contrastive losses (method.md 3.3, 3.4, 3.6) as small pure functions on L2-normalised embeddings.

Every embedding argument is float ``[B, D]`` with unit rows; every loss returns a scalar averaged over its anchors.
Across processes the callers pass gathered (global) batches, see :mod:`clsp.contrastive.distributed`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent over the 2B embeddings ``[z1; z2]`` (``z1[i]``, ``z2[i]``: two views of image i).

    For each anchor a: ``-log exp(z_a·z_p(a)/τ) / Σ_{b≠a} exp(z_a·z_b/τ)``, averaged over the 2B anchors.
    No (τ/τ_base) factor, as in the reference.
    """
    z = torch.cat([z1, z2])
    b = z1.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, targets)


def infonce_with_queue(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo InfoNCE: query ``q`` ``[B, D]`` against its key ``k`` ``[B, D]`` (positive, logit 0) and the
    ``K`` negatives ``queue`` ``[K, D]``; cross-entropy of the logits divided by τ."""
    positive = (q * k).sum(1, keepdim=True)
    logits = torch.cat([positive, q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def moco_loss(q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, queues: Tensor, temperature: float) -> Tensor:
    """MoCo v2+ symmetric loss with two queues ``queues`` ``[2, K, D]`` (queue 0 holds past k1, queue 1 past k2):
    ``½ [InfoNCE(q1, k2, queue 1) + InfoNCE(q2, k1, queue 0)]``."""
    return 0.5 * (
        infonce_with_queue(q1, k2, queues[1], temperature) + infonce_with_queue(q2, k1, queues[0], temperature)
    )


def nearest_neighbour(z: Tensor, support: Tensor) -> Tensor:
    """For each row of ``z`` ``[B, D]``, the most similar (cosine) row of ``support`` ``[K, D]`` -> ``[B, D]``."""
    return support[(z @ support.T).argmax(1)]


def nnclr_loss(z1: Tensor, z2: Tensor, p1: Tensor, p2: Tensor, support: Tensor, temperature: float) -> Tensor:
    """NNCLR's symmetric loss from projections ``z1``, ``z2`` and predictions ``p1``, ``p2`` (unit rows ``[B, D]``)
    of two views and the support set ``[K, D]``: the nearest neighbour of ``z1_i`` is the anchor of ``p2_i``,
    ``ℓ_i = -log exp(NN(z1_i)·p2_i/τ) / Σ_k exp(NN(z1_i)·p2_k/τ)``, averaged with the same from ``z2`` and ``p1``.

    The neighbours come from a detached support set, so gradients flow through the predictions only.
    """
    targets = torch.arange(z1.shape[0], device=z1.device)
    nn1, nn2 = nearest_neighbour(z1, support), nearest_neighbour(z2, support)
    return 0.5 * (
        F.cross_entropy(nn1 @ p2.T / temperature, targets) + F.cross_entropy(nn2 @ p1.T / temperature, targets)
    )


def clsp_alignment(z1: Tensor, z3: Tensor) -> Tensor:
    """The CLSP term ``mean_i ||z1_i - z3_i||² = mean_i (2 - 2 z1_i·z3_i)``, in [0, 4]; gradients into both."""
    return (2 - 2 * (z1 * z3).sum(1)).mean()


__all__ = ["clsp_alignment", "infonce_with_queue", "moco_loss", "nearest_neighbour", "nnclr_loss", "nt_xent"]
