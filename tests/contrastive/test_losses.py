"""Each loss against a naive loop over anchors written straight from method.md 3.3-3.6."""

import math

import pytest
import torch
import torch.nn.functional as F

from clsp.contrastive.losses import clsp_alignment, moco_loss, nnclr_loss, nt_xent

TAU = 0.2


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def naive_nt_xent(z1, z2, tau):
    z = torch.cat([z1, z2])
    n, b = len(z), len(z1)
    total = 0.0
    for a in range(n):
        p = (a + b) % n
        denominator = sum(math.exp(float(z[a] @ z[c]) / tau) for c in range(n) if c != a)
        total += -math.log(math.exp(float(z[a] @ z[p]) / tau) / denominator)
    return total / n


def naive_infonce(q, k, queue, tau):
    total = 0.0
    for i in range(len(q)):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[j]) / tau) for j in range(len(queue)))
        total += -math.log(pos / (pos + neg))
    return total / len(q)


def naive_nnclr_one_side(z, p_other, support, tau):
    """One side of NNCLR's loss in float64 Python: NN of z_i in the support set against the other view's predictions."""
    total = 0.0
    for i in range(len(z)):
        sims = [float(z[i] @ s) for s in support]
        nn = support[max(range(len(sims)), key=sims.__getitem__)].double()
        logits = [float(nn @ p_other[k].double()) / tau for k in range(len(p_other))]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    return total / len(z)


@pytest.mark.parametrize("b", [1, 4, 9])
def test_nt_xent_matches_naive_loop(b):
    z1, z2 = unit(b, 16, seed=1), unit(b, 16, seed=2)
    assert abs(nt_xent(z1, z2, TAU).item() - naive_nt_xent(z1, z2, TAU)) < 1e-5
    assert abs(nt_xent(z1.float(), z2.float(), TAU).item() - naive_nt_xent(z1, z2, TAU)) < 1e-5


def test_moco_loss_matches_naive_loop():
    q1, q2, k1, k2 = (unit(6, 8, seed=s) for s in range(4))
    queues = unit(2, 32, 8, seed=9)
    expected = 0.5 * (naive_infonce(q1, k2, queues[1], TAU) + naive_infonce(q2, k1, queues[0], TAU))
    assert abs(moco_loss(q1, q2, k1, k2, queues, TAU).item() - expected) < 1e-5


@pytest.mark.parametrize("b", [1, 5, 12])
def test_nnclr_loss_matches_float64_reference(b):
    z1, z2, p1, p2 = (unit(b, 8, seed=s) for s in (3, 4, 10, 11))
    support = unit(40, 8, seed=5)
    expected = 0.5 * (naive_nnclr_one_side(z1, p2, support, TAU) + naive_nnclr_one_side(z2, p1, support, TAU))
    assert abs(nnclr_loss(*(t.float() for t in (z1, z2, p1, p2, support)), TAU).item() - expected) < 1e-5


def test_nnclr_gradients_reach_the_predictions_only():
    z1, z2, p1, p2 = (unit(6, 8, seed=s).requires_grad_() for s in (3, 4, 10, 11))
    nnclr_loss(z1, z2, p1, p2, unit(40, 8, seed=5), TAU).backward()
    assert z1.grad is None and z2.grad is None  # the neighbour lookup is not differentiable
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_clsp_alignment_is_mean_squared_distance():
    z1, z3 = unit(7, 8, seed=6), unit(7, 8, seed=7)
    expected = sum(float(((z1[i] - z3[i]) ** 2).sum()) for i in range(7)) / 7
    assert abs(clsp_alignment(z1, z3).item() - expected) < 1e-5
    assert clsp_alignment(z1, z1).abs().item() < 1e-12


def test_nt_xent_of_random_embeddings_is_near_log_of_negatives():
    """Sanity check from method.md 3.3: the loss starts near ln(2B - 1)."""
    z1, z2 = unit(512, 256, seed=8), unit(512, 256, seed=9)
    assert abs(nt_xent(z1, z2, TAU).item() - math.log(1023)) < 0.1
