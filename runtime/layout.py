"""Inputs in the one memory layout an exported artifact was compiled for: row-major (standard) strides.

torch calls a tensor contiguous when only the strides of its size-1 dimensions are unusual (images permuted from
NHWC with one channel have strides ``(256, 1, 16, 1)`` for ``[N, 1, 16, 16]``), and a scalar expanded to a batch
has stride 0. Eager torch reads either correctly; AOTInductor code reads both wrongly, and ``.contiguous()``
leaves them as they are. So every backend passes its inputs through :func:`standard_layout`.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def standard_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The row-major strides of ``shape``: ``(C*H*W, H*W, W, 1)`` for ``[N, C, H, W]``, size-1 dimensions included."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def standard_layout(x: Tensor) -> Tensor:
    """``x`` itself when its strides are :func:`standard_strides` of its shape (the usual case: no copy), else a
    row-major copy of it."""
    if x.stride() == standard_strides(x.shape):
        return x
    return x.clone(memory_format=torch.contiguous_format)


class StandardLayoutInputs:
    """``model(*inputs) -> output`` that hands ``model`` its inputs in :func:`standard_layout`."""

    def __init__(self, model: Callable[..., Tensor]) -> None:
        self.model = model

    def __call__(self, *inputs: Tensor) -> Tensor:
        return self.model(*(standard_layout(x) for x in inputs))
