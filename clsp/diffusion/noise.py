"""Counter-based Gaussian noise: every number is a pure function of (seed, image, candidate, draw, element).

The uniform bits come from Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel Random Numbers: As Easy as
1, 2, 3", SC 2011), a keyed bijection of a 128-bit counter, computed here with integer tensor ops on the device
the anchors live on. Gaussians come from the Box-Muller transform. A whole batch's noise is one vectorised
computation with a fixed number of ops, whatever the batch, and a sample's noise never depends on its batch,
process or resume point.

Layout: key = the 64-bit seed (low, high word); counter = (element block, draw, image index, candidate index).
One Philox call gives four 32-bit words, i.e. four uniforms in (0, 1) and, through two Box-Muller pairs, the
Gaussians of four consecutive elements of the sample's flattened noise tensor.
"""

import math

import torch
from torch import Tensor

NOISE_VERSION = "philox4x32-10/box-muller/v1"
"""Recorded in a positive store's provenance: stores are never resumed with another noise construction."""

MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)
ROUNDS = 10


def _mulhilo(a: Tensor, multiplier: int) -> tuple[Tensor, Tensor]:
    """High and low 32-bit words of ``a * multiplier`` for 32-bit values held in int64, without int64 overflow:
    the 32x32-bit product is formed from the multiplier's 16-bit halves (each partial product < 2^48)."""
    low_part = a * (multiplier & 0xFFFF)
    high_part = a * (multiplier >> 16)
    low_sum = low_part + ((high_part & 0xFFFF) << 16)
    return (high_part >> 16) + (low_sum >> 32), low_sum & MASK32


def philox4x32(counter: list[Tensor], key: tuple[int, int]) -> list[Tensor]:
    """Philox4x32-10 of the four 32-bit counter words (int64 tensors of one shape, values in [0, 2^32)) under the
    64-bit ``key`` (two 32-bit ints); returns four int64 tensors of 32-bit words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(ROUNDS):
        if round_index:
            k0, k1 = (k0 + _WEYL[0]) & MASK32, (k1 + _WEYL[1]) & MASK32
        hi0, lo0 = _mulhilo(c0, _MULTIPLIERS[0])
        hi1, lo1 = _mulhilo(c2, _MULTIPLIERS[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


def _uniform(words: Tensor) -> Tensor:
    """float32 uniforms in (0, 1) from 32-bit words: the top 24 bits, centred in their 2^-24 bin (exact)."""
    return ((words >> 8).float() + 0.5) * 2.0**-24


def gaussian_noise(
    seed: int, image_indices: Tensor, candidate_indices: Tensor, draw: int, shape: tuple[int, ...], device
) -> Tensor:
    """float32 ``[B, *shape]`` standard normal noise on ``device``; row b is a pure function of ``(seed,
    image_indices[b], candidate_indices[b], draw)``. Indices are int64 ``[B]`` in [0, 2^32); seed in [0, 2^64)."""
    numel = math.prod(shape)
    blocks = -(-numel // 4)
    images = image_indices.to(device=device, dtype=torch.int64)[:, None]
    candidates = candidate_indices.to(device=device, dtype=torch.int64)[:, None]
    element_block = torch.arange(blocks, device=device, dtype=torch.int64)[None, :]
    counter = [
        element_block.expand(len(images), blocks),
        torch.full((len(images), blocks), draw & MASK32, device=device, dtype=torch.int64),
        images.expand(-1, blocks),
        candidates.expand(-1, blocks),
    ]
    w0, w1, w2, w3 = (_uniform(w) for w in philox4x32(counter, (seed & MASK32, (seed >> 32) & MASK32)))
    radius01, radius23 = torch.sqrt(-2.0 * torch.log(w0)), torch.sqrt(-2.0 * torch.log(w2))
    angle01, angle23 = (2 * math.pi) * w1, (2 * math.pi) * w3
    z = torch.stack(
        [radius01 * torch.cos(angle01), radius01 * torch.sin(angle01), radius23 * torch.cos(angle23),
         radius23 * torch.sin(angle23)],
        dim=-1,
    )  # fmt: skip
    return z.reshape(len(images), 4 * blocks)[:, :numel].reshape(len(images), *shape)


class NoiseStreams:
    """One independent Gaussian stream per ``(seed, image index, candidate index)``: the d-th :meth:`draw` of a
    stream is :func:`gaussian_noise` with ``draw = d``, computed on the requested device."""

    def __init__(self, seed: int, image_indices: Tensor, candidate_indices: Tensor) -> None:
        self.seed, self.indices = seed, (image_indices, candidate_indices)
        self.draws = 0

    def draw(self, shape: tuple[int, ...], device: torch.device | str) -> Tensor:
        """float32 ``[B, *shape]``: the next draw of every stream."""
        device = torch.device(device)
        if self.indices[0].device != device:  # copied once, not per draw: a host-to-device copy waits for the device
            self.indices = tuple(i.to(device=device, dtype=torch.int64) for i in self.indices)
        noise = gaussian_noise(self.seed, *self.indices, self.draws, shape, device)
        self.draws += 1
        return noise
