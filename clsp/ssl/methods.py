"""SimCLR, MoCo v2+ and NNCLR, each with the CLSP alignment term (method.md 3.3, 3.4, 3.6).

A method is one ``nn.Module`` (so DDP, mixed precision and ``save_state`` see all of it: encoders, queues, probe)
whose ``forward`` takes the views of a batch and returns its losses. All three share the online path: the encoder
and projector over the views ``[v1; v2(; v3)]``, the CLSP term ``mean(2 - 2 z1·z3)`` on the local batch, and the
online probe.

BatchNorm groups (``ssl.bn_groups``): ``per_view`` runs the backbone once per view, so each view, the synthetic one
included, is normalised with its own batch statistics, as the reference's MoCo does (method.md 3.4) and as its
SimCLR's 4-GPU DataParallel chunks of ``[v1; v2; s]`` mostly do (method.md 3.3); ``joint`` runs one pass over all
2B or 3B images, the reference's SimCLR on one GPU.
"""

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsp.config import SSLConfig
from clsp.ssl.backbones import Projector, build_backbone
from clsp.ssl.distributed import gather_no_grad, gather_with_grad
from clsp.ssl.losses import clsp_alignment, moco_loss, nnclr_loss, nt_xent
from clsp.ssl.queues import EmbeddingQueues


class SSLMethod(nn.Module):
    """Encoder + projector + optional online linear probe; subclasses define :meth:`contrastive_loss`."""

    def __init__(self, cfg: SSLConfig, in_channels: int, num_classes: int | None) -> None:
        super().__init__()
        self.backbone, self.feature_dim = build_backbone(cfg.backbone, cfg.stem, in_channels)
        self.projector = Projector(self.feature_dim, cfg.projector_hidden_dim, cfg.projector_dim)
        # The probe reads detached features, so it never changes the encoder (the reference has none; method.md 4.1).
        self.probe = nn.Linear(self.feature_dim, num_classes) if num_classes else None
        self.temperature = cfg.temperature
        self.clsp_weight = cfg.clsp_weight
        self.bn_groups = cfg.bn_groups

    def embed(self, backbone: nn.Module, projector: nn.Module, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Features ``[V*B, d]`` and L2-normalised float32 embeddings ``[V*B, projector_dim]`` of the ``V`` views
        (each ``[B, C, S, S]``), concatenated in view order; BatchNorm statistics per ``self.bn_groups``."""
        per_view = self.bn_groups == "per_view"
        h = torch.cat([backbone(v) for v in views]) if per_view else backbone(torch.cat(views))
        # The projector has no BatchNorm (method.md 3.2), so one pass over all views is the same as one per view.
        return h, F.normalize(projector(h).float(), dim=1)

    def contrastive_loss(self, z1: Tensor, z2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        """The method's own loss from the local online embeddings ``z1``, ``z2`` ``[B, D]``."""
        raise NotImplementedError

    def forward(self, views: list[Tensor], labels: Tensor | None = None, momentum: float = 0.0) -> dict[str, Tensor]:
        """``views``: ``[v1, v2]`` or ``[v1, v2, v3]``, each float ``[B, C, S, S]``; ``labels`` int64 ``[B]`` (-1 =
        none) for the probe; ``momentum``: the key encoder's EMA momentum this step (MoCo only).

        Returns scalars ``loss = ssl + clsp_weight * clsp``, ``ssl``, ``clsp`` (0 without v3) and, with a probe and
        labels, ``probe`` (its cross-entropy, to minimise alongside ``loss``), ``probe_correct``, ``probe_count``.
        """
        b = views[0].shape[0]
        h, z = self.embed(self.backbone, self.projector, views)
        z1, z2 = z[:b], z[b : 2 * b]
        out = {"ssl": self.contrastive_loss(z1, z2, views, momentum)}
        out["clsp"] = clsp_alignment(z1, z[2 * b :]) if len(views) == 3 else z.new_zeros(())
        out["loss"] = out["ssl"] + self.clsp_weight * out["clsp"]
        if self.probe is not None and labels is not None:
            known = labels >= 0
            logits = self.probe(h[:b].detach().float())[known]
            out["probe"] = F.cross_entropy(logits, labels[known]) if known.any() else logits.sum()
            out["probe_correct"] = (logits.argmax(1) == labels[known]).sum()
            out["probe_count"] = known.sum()
        return out


class SimCLR(SSLMethod):
    """NT-Xent over the 2B real embeddings of the global batch (τ = ``temperature``)."""

    def contrastive_loss(self, z1: Tensor, z2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        return nt_xent(gather_with_grad(z1), gather_with_grad(z2), self.temperature)


class MoCo(SSLMethod):
    """MoCo v2+: a momentum key encoder and two queues of past keys (one per view), symmetric InfoNCE."""

    def __init__(self, cfg: SSLConfig, in_channels: int, num_classes: int | None) -> None:
        super().__init__(cfg, in_channels, num_classes)
        self.key_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.queues = EmbeddingQueues(2, cfg.queue_size, cfg.projector_dim)

    @torch.no_grad()
    def _update_key_encoder(self, momentum: float) -> None:
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        key = [*self.key_backbone.parameters(), *self.key_projector.parameters()]
        torch._foreach_lerp_(key, online, 1 - momentum)

    def contrastive_loss(self, z1: Tensor, z2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        b = z1.shape[0]
        self._update_key_encoder(momentum)
        with torch.no_grad():
            # k3 is not computed: the reference computes and discards it.
            _, k = self.embed(self.key_backbone, self.key_projector, views[:2])
        k1, k2 = k[:b], k[b:]
        loss = moco_loss(z1, z2, k1, k2, self.queues.queues.clone(), self.temperature)
        self.queues.push(torch.stack([gather_no_grad(k1), gather_no_grad(k2)]))
        return loss


class NNCLR(SSLMethod):
    """NNCLR without a predictor head: each view's nearest neighbour in a FIFO support set of past view-1
    embeddings replaces it as the anchor. CLSP on NNCLR is not in the reference code (method.md 3.6)."""

    def __init__(self, cfg: SSLConfig, in_channels: int, num_classes: int | None) -> None:
        super().__init__(cfg, in_channels, num_classes)
        self.support = EmbeddingQueues(1, cfg.nnclr_support_size, cfg.projector_dim)

    def contrastive_loss(self, z1: Tensor, z2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        g1, g2 = gather_with_grad(z1), gather_with_grad(z2)
        loss = nnclr_loss(g1, g2, self.support.queues[0].clone(), self.temperature)
        self.support.push(g1.detach()[None])
        return loss


METHODS: dict[str, type[SSLMethod]] = {"simclr": SimCLR, "moco": MoCo, "nnclr": NNCLR}


def build_method(cfg: SSLConfig, in_channels: int, num_classes: int | None) -> SSLMethod:
    """The method ``cfg.method`` for images with ``in_channels`` channels; a probe when ``num_classes`` is set."""
    return METHODS[cfg.method](cfg, in_channels, num_classes)
