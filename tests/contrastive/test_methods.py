"""Methods: each forward equals its loss recomputed from the embeddings; MoCo's EMA and queues; FIFO queues."""

import copy

import pytest
import torch
import torch.nn.functional as F

from clsp.config import SSLConfig
from clsp.contrastive.losses import clsp_alignment, moco_loss, nnclr_loss, nt_xent
from clsp.contrastive.methods import build_method
from clsp.contrastive.queues import EmbeddingQueues

B = 8


def config(method: str, **kw) -> SSLConfig:
    return SSLConfig(
        method=method, backbone="small-cnn", projector_hidden_dim=32, projector_dim=16, queue_size=16,
        nnclr_support_size=32, nnclr_predictor_hidden_dim=64, clsp_weight=0.5, **kw,
    )  # fmt: skip


def views(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, 1, 16, 16, generator=g) for _ in range(n)]


def online_embeddings(method, vs):
    _, y = method.embed(method.backbone, method.projector, vs)
    return F.normalize(y, dim=1).split(B)


def test_simclr_forward_is_nt_xent_plus_weighted_clsp():
    torch.manual_seed(0)
    m = build_method(config("simclr"), 1, None)
    vs = views()
    out = m(vs)
    z1, z2, z3 = online_embeddings(m, vs)
    torch.testing.assert_close(out["ssl"], nt_xent(z1, z2, 0.2))
    torch.testing.assert_close(out["clsp"], clsp_alignment(z1, z3))
    torch.testing.assert_close(out["loss"], out["ssl"] + 0.5 * out["clsp"])


def test_two_views_give_the_baseline():
    m = build_method(config("simclr"), 1, None)
    out = m(views(2))
    assert out["clsp"].item() == 0 and out["loss"] == out["ssl"]


def test_moco_updates_key_encoder_then_uses_and_fills_the_queues():
    torch.manual_seed(0)
    m = build_method(config("moco"), 1, None)
    with torch.no_grad():  # make the key encoder differ from the online one, as after some training
        for p in m.key_backbone.parameters():
            p.add_(0.1)
    online = [p.clone() for p in m.backbone.parameters()]
    key_before = [p.clone() for p in m.key_backbone.parameters()]
    queues_before = m.queues.queues.clone()
    vs = views()
    out = m(vs, momentum=0.9)
    for k, k0, q0 in zip(m.key_backbone.parameters(), key_before, online, strict=True):
        torch.testing.assert_close(k, 0.9 * k0 + 0.1 * q0)
    z1, z2, _ = online_embeddings(m, vs)
    with torch.no_grad():
        k = F.normalize(m.embed(m.key_backbone, m.key_projector, vs[:2])[1], dim=1)
    k1, k2 = k.split(B)
    torch.testing.assert_close(out["ssl"], moco_loss(z1, z2, k1, k2, queues_before, 0.2))
    torch.testing.assert_close(m.queues.queues[0, :B], k1)
    torch.testing.assert_close(m.queues.queues[1, :B], k2)
    torch.testing.assert_close(m.queues.queues[:, B:], queues_before[:, B:])
    assert int(m.queues.ptr) == B
    assert not any(p.requires_grad for p in m.key_backbone.parameters())


def test_nnclr_predicts_across_views_and_fills_the_support_set():
    torch.manual_seed(0)
    m = build_method(config("nnclr"), 1, None)
    reference = copy.deepcopy(m)
    support_before = m.support.queues[0].clone()
    vs = views()
    out = m(vs)
    # Independently, per view: backbone, the 3-layer projector with BatchNorm, the 2-layer predictor.
    y = [reference.projector(reference.backbone(v)) for v in vs]
    z = [F.normalize(t, dim=1) for t in y]
    p1, p2 = (F.normalize(reference.predictor(t), dim=1) for t in y[:2])
    torch.testing.assert_close(out["ssl"], nnclr_loss(z[0], z[1], p1, p2, support_before, 0.2))
    torch.testing.assert_close(out["clsp"], clsp_alignment(z[0], z[2]))
    torch.testing.assert_close(m.support.queues[0, :B], z[0].detach())
    assert sum(isinstance(layer, torch.nn.BatchNorm1d) for layer in m.projector) == 3
    assert m.predictor[0].out_features == 64 and m.predictor[-1].out_features == 16


def shifted_views() -> list[torch.Tensor]:
    """Three views whose pixel statistics differ, as synthetic positives' can from real views'."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(B, 1, 16, 16, generator=g) * s + m for s, m in ((1, 0), (1, 0.5), (3, 2))]


@pytest.mark.parametrize("method", ["simclr", "moco", "nnclr"])
def test_per_view_batchnorm_equals_separate_forward_passes(method):
    torch.manual_seed(0)
    m = build_method(config(method), 1, None)
    assert m.bn_groups == "per_view"  # the default, as the reference (method.md 3.3, 3.4)
    reference = copy.deepcopy(m)
    vs = shifted_views()
    out = m(vs, momentum=0.9)
    out["loss"].backward()

    # Independently: one plain backbone call per view, in view order, then the projector.
    z = [F.normalize(reference.projector(reference.backbone(v)).float(), dim=1) for v in vs]  # per-view heads too
    torch.testing.assert_close(out["clsp"], clsp_alignment(z[0], z[2]))
    if method == "simclr":
        expected = nt_xent(z[0], z[1], 0.2)
        torch.testing.assert_close(out["ssl"], expected)
        (expected + 0.5 * clsp_alignment(z[0], z[2])).backward()
        for p, q in zip(m.backbone.parameters(), reference.backbone.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad)
    # Running statistics: updated once per view, in order, exactly as three separate passes update them.
    for a, b in zip(m.backbone.buffers(), reference.backbone.buffers(), strict=True):
        torch.testing.assert_close(a, b)


def test_per_view_keeps_the_real_views_independent_of_the_synthetic_one_and_joint_does_not():
    vs, other = shifted_views(), shifted_views()
    other[2] = other[2] * 0.1 - 5  # only the third view changes
    for groups, independent in (("per_view", True), ("joint", False)):
        torch.manual_seed(0)
        m = build_method(config("simclr", bn_groups=groups), 1, None)
        z1 = online_embeddings(m, vs)[0]
        z1_other = online_embeddings(m, other)[0]
        assert torch.allclose(z1, z1_other, atol=1e-6) is independent


def test_probe_counts_only_labelled_images_and_sees_no_gradient_path_to_the_encoder():
    m = build_method(config("simclr"), 1, num_classes=10)
    labels = torch.tensor([0, 1, 2, 3, -1, -1, 4, 5])
    out = m(views(), labels)
    assert out["probe_count"].item() == 6
    out["probe"].backward()
    assert all(p.grad is None for p in m.backbone.parameters())
    assert m.probe.weight.grad is not None


def test_queue_is_fifo_and_wraps():
    q = EmbeddingQueues(1, 6, 2)
    for value in range(4):
        q.push(torch.full((1, 2, 2), float(value)))
    assert q.queues[0, :, 0].tolist() == [3, 3, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="multiple"):
        q.push(torch.zeros(1, 4, 2))


def test_global_batchnorm_conversion_keeps_the_key_encoder_frozen():
    from clsp.contrastive.distributed import GlobalBatchNorm, convert_to_global_batchnorm

    m = convert_to_global_batchnorm(build_method(config("moco"), 1, None))
    assert any(isinstance(x, GlobalBatchNorm) for x in m.key_backbone.modules())
    assert not any(p.requires_grad for p in m.key_backbone.parameters())
    assert all(p.requires_grad for p in m.backbone.parameters())
