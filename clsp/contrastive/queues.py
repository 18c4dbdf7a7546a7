"""FIFO queues of past embeddings (MoCo negatives, NNCLR support set), kept as buffers so they are saved and
restored with the model's state dict."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EmbeddingQueues(nn.Module):
    """``num_queues`` FIFO queues of ``size`` unit vectors of dimension ``dim``: ``queues`` float ``[Q, size, dim]``.

    Initialised from a normal distribution and L2-normalised (as the reference); ``ptr`` is the next slot.
    """

    def __init__(self, num_queues: int, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("queues", F.normalize(torch.randn(num_queues, size, dim), dim=2))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queues.shape[1]

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Write ``keys`` ``[Q, B, dim]`` (queue q gets ``keys[q]``) over the oldest B entries; B must divide ``size``."""
        b = keys.shape[1]
        if self.size % b:
            raise ValueError(f"queue size {self.size} is not a multiple of the batch {b}")
        start = int(self.ptr)
        self.queues[:, start : start + b] = keys.to(self.queues.dtype)
        self.ptr.fill_((start + b) % self.size)
