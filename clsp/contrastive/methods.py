"""SimCLR, MoCo v2+ and NNCLR, each with the CLSP alignment term (method.md 3.3, 3.4, 3.6).

A method is one ``nn.Module`` (so DDP, mixed precision and ``save_state`` see all of it: encoders, queues, probe)
whose ``forward`` takes the views of a batch and returns its losses. All three share the online path: the encoder
and projector over the views ``[v1; v2(; v3)]``, the CLSP term ``mean(2 - 2 z1·z3)`` on the local batch (z: the
L2-normalised projections), and the online probe.

BatchNorm groups (``ssl.bn_groups``): ``per_view`` runs the backbone once per view, so each view, the synthetic one
included, is normalised with its own batch statistics, as the reference's MoCo does (method.md 3.4) and as its
SimCLR's 4-GPU DataParallel chunks of ``[v1; v2; s]`` mostly do (method.md 3.3); ``joint`` runs one pass over all
2B or 3B images, the reference's SimCLR on one GPU. Heads with BatchNorm (NNCLR's) follow the same grouping.
"""

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsp.config import SSLConfig
from clsp.contrastive.backbones import Projector, build_backbone
from clsp.contrastive.distributed import gather_no_grad, gather_with_grad
from clsp.contrastive.losses import clsp_alignment, moco_loss, nnclr_loss, nt_xent
from clsp.contrastive.queues import EmbeddingQueues


class SSLMethod(nn.Module):
    """Encoder + projector + optional online linear probe; subclasses define :meth:`contrastive_loss`."""

    def __init__(self, cfg: SSLConfig, in_channels: int, num_classes: int | None) -> None:
        super().__init__()
        self.backbone, self.feature_dim = build_backbone(cfg.backbone, cfg.stem, in_channels)
        self.projector = self.build_projector(cfg)
        # The probe reads detached features, so it never changes the encoder (the reference has none; method.md 4.1).
        self.probe = nn.Linear(self.feature_dim, num_classes) if num_classes else None
        self.temperature = cfg.temperature
        self.clsp_weight = cfg.clsp_weight
        self.bn_groups = cfg.bn_groups

    def build_projector(self, cfg: SSLConfig) -> nn.Module:
        return Projector(self.feature_dim, cfg.projector_hidden_dim, cfg.projector_dim)

    def per_group(self, module: nn.Module, inputs: list[Tensor]) -> Tensor:
        """``module`` over ``inputs`` (one tensor per view), concatenated in view order: one call per view with
        ``per_view`` BatchNorm groups, one call over all of them with ``joint``."""
        if self.bn_groups == "per_view":
            return torch.cat([module(x) for x in inputs])
        return module(torch.cat(inputs))

    def embed(self, backbone: nn.Module, projector: nn.Module, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Features ``[V*B, d]`` and float32 projections ``[V*B, projector_dim]`` (not normalised) of the ``V``
        views (each ``[B, C, S, S]``), concatenated in view order; BatchNorm statistics per ``self.bn_groups``."""
        h = self.per_group(backbone, views)
        return h, self.per_group(projector, list(h.split(views[0].shape[0]))).float()

    def contrastive_loss(self, y1: Tensor, y2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        """The method's own loss from the local online projections ``y1``, ``y2`` ``[B, D]`` (not normalised)."""
        raise NotImplementedError

    def forward(self, views: list[Tensor], labels: Tensor | None = None, momentum: float = 0.0) -> dict[str, Tensor]:
        """``views``: ``[v1, v2]`` or ``[v1, v2, v3]``, each float ``[B, C, S, S]``; ``labels`` int64 ``[B]`` (-1 =
        none) for the probe; ``momentum``: the key encoder's EMA momentum this step (MoCo only).

        Returns scalars ``loss = ssl + clsp_weight * clsp``, ``ssl``, ``clsp`` (0 without v3) and, with a probe and
        labels, ``probe`` (its cross-entropy, to minimise alongside ``loss``), ``probe_correct``, ``probe_count``.
        """
        b = views[0].shape[0]
        h, y = self.embed(self.backbone, self.projector, views)
        out = {"ssl": self.contrastive_loss(y[:b], y[b : 2 * b], views, momentum)}
        z = F.normalize(y, dim=1)
        out["clsp"] = clsp_alignment(z[:b], z[2 * b :]) if len(views) == 3 else z.new_zeros(())
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

    def contrastive_loss(self, y1: Tensor, y2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        z1, z2 = F.normalize(y1, dim=1), F.normalize(y2, dim=1)
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

    def contrastive_loss(self, y1: Tensor, y2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        b = y1.shape[0]
        self._update_key_encoder(momentum)
        with torch.no_grad():
            # k3 is not computed: the reference computes and discards it.
            k = F.normalize(self.embed(self.key_backbone, self.key_projector, views[:2])[1], dim=1)
        k1, k2 = k[:b], k[b:]
        z1, z2 = F.normalize(y1, dim=1), F.normalize(y2, dim=1)
        loss = moco_loss(z1, z2, k1, k2, self.queues.queues.clone(), self.temperature)
        self.queues.push(torch.stack([gather_no_grad(k1), gather_no_grad(k2)]))
        return loss


class NNCLR(SSLMethod):
    """NNCLR (Dwibedi et al. 2021) as its paper and solo-learn define it: a 3-layer projection head with BatchNorm,
    a 2-layer prediction head, and a FIFO support set of past view-1 projections. Each view's nearest neighbour in
    the support set is the anchor for the *other* view's prediction, with the other images' predictions of that
    view as negatives (cross-view only). CLSP on NNCLR is not in the reference code (method.md 3.6): its term
    aligns the projections of v1 and the synthetic view, as for SimCLR.

    Not solo-learn's: the optimiser (SGD with the config's schedule, as every clsp method, instead of LARS)."""

    def __init__(self, cfg: SSLConfig, in_channels: int, num_classes: int | None) -> None:
        super().__init__(cfg, in_channels, num_classes)
        d, hidden = cfg.projector_dim, cfg.nnclr_predictor_hidden_dim
        self.predictor = nn.Sequential(
            nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d)
        )
        self.support = EmbeddingQueues(1, cfg.nnclr_support_size, d)

    def build_projector(self, cfg: SSLConfig) -> nn.Module:
        hidden, d = cfg.projector_hidden_dim, cfg.projector_dim
        return nn.Sequential(
            nn.Linear(self.feature_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, d), nn.BatchNorm1d(d),
        )  # fmt: skip

    def contrastive_loss(self, y1: Tensor, y2: Tensor, views: list[Tensor], momentum: float) -> Tensor:
        p1, p2 = self.per_group(self.predictor, [y1, y2]).float().split(y1.shape[0])
        z1, z2 = F.normalize(y1, dim=1), F.normalize(y2, dim=1)
        p1, p2 = F.normalize(p1, dim=1), F.normalize(p2, dim=1)
        g1, g2 = gather_no_grad(z1), gather_no_grad(z2)  # the neighbours are looked up without gradients
        loss = nnclr_loss(
            g1, g2, gather_with_grad(p1), gather_with_grad(p2), self.support.queues[0].clone(), self.temperature
        )
        self.support.push(g1[None])
        return loss


METHODS: dict[str, type[SSLMethod]] = {"simclr": SimCLR, "moco": MoCo, "nnclr": NNCLR}


def build_method(cfg: SSLConfig, in_channels: int, num_classes: int | None) -> SSLMethod:
    """The method ``cfg.method`` for images with ``in_channels`` channels; a probe when ``num_classes`` is set."""
    return METHODS[cfg.method](cfg, in_channels, num_classes)
