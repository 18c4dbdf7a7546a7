"""Collectives with gradients, and a batch norm whose statistics span every process on any device.

Each contrastive loss is computed in full on every process from the gathered global batch, so process ``q``'s
loss ``L_q`` depends on every process's embeddings. DDP averages parameter gradients over the ``P`` processes,
i.e. it descends ``J = (1/P) Σ_q L_q``; for that, process ``p`` must receive ``Σ_q ∂L_q/∂x_p`` for its own
input ``x_p``, which is why both backward passes below all-reduce (sum) the incoming gradient. Accelerate's
``gather`` has no backward, and ``torch.distributed.nn.all_gather`` needs reduce-scatter, which gloo lacks.
"""

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``[B, ...]`` from every process in rank order -> ``[P*B, ...]``, differentiably.

    Every process must pass the same ``B``. With one process (or no process group) ``x`` is returned as is.
    """
    return _GatherWithGrad.apply(x) if world_size() > 1 else x


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Like :func:`gather_with_grad` for tensors that need no gradient (queue keys)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """Sum ``x`` over processes, differentiably (identity with one process)."""
    return _AllReduceWithGrad.apply(x) if world_size() > 1 else x


class GlobalBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are taken over the batches of all processes.

    torch's ``SyncBatchNorm`` refuses CPU tensors; this one works over gloo as well as NCCL. With one process,
    in eval mode, or without a process group it is plain ``BatchNorm2d``. Input ``[B, C, H, W]``, any float dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        # Sums in fp32 even under autocast: E[x^2] - E[x]^2 loses too much in bf16.
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        stats = all_reduce_with_grad(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(unbiased, momentum)
        out = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a :class:`GlobalBatchNorm` with the same state.

    On CUDA prefer ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (fused kernels); the result is the same.
    """
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm):
        replacement = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        for name, param in module.named_parameters(recurse=False):  # a frozen (MoCo key) encoder stays frozen
            getattr(replacement, name).requires_grad_(param.requires_grad)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, convert_to_global_batchnorm(child))
    return module


__all__ = [
    "GlobalBatchNorm",
    "all_reduce_with_grad",
    "convert_to_global_batchnorm",
    "gather_no_grad",
    "gather_with_grad",
    "world_size",
]
