"""Counter-based noise: Philox4x32-10 against Random123's known answers and a plain-integer reference, Gaussian
statistics on large samples, independence between keys and draws, and streams that depend only on their key."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode

from clsp.diffusion.noise import MASK32, NoiseStreams, gaussian_noise, philox4x32
from clsp.diffusion.sampler import SamplerSettings, sample_positives

# Random123's published known-answer vectors for Philox4x32-10 (counter, key, output).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32, MASK32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def reference_philox(counter: tuple[int, ...], key: tuple[int, int]) -> tuple[int, ...]:
    """Philox4x32-10 with Python's unbounded integers: the textbook round, no tensor tricks."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & MASK32, (k1 + 0xBB67AE85) & MASK32
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
    return c0, c1, c2, c3


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_matches_random123_known_answers(counter, key, expected):
    words = philox4x32([torch.tensor([c]) for c in counter], key)
    assert tuple(int(w) for w in words) == expected == reference_philox(counter, key)


def test_philox_matches_the_integer_reference_on_random_counters_and_keys():
    rng = np.random.default_rng()
    counters = rng.integers(0, 2**32, (64, 4), dtype=np.uint64)
    key = tuple(int(k) for k in rng.integers(0, 2**32, 2, dtype=np.uint64))
    words = philox4x32([torch.from_numpy(counters[:, i].astype(np.int64)) for i in range(4)], key)
    got = np.stack([w.numpy() for w in words], axis=1)
    expected = np.array([reference_philox(tuple(int(c) for c in row), key) for row in counters])
    np.testing.assert_array_equal(got, expected)


def test_gaussians_follow_the_documented_layout():
    # Element 4b + j of a sample comes from Philox block b, counter (b, draw, image, candidate), key = the seed.
    seed, image, candidate, draw = 2**40 + 12345, 77, 3, 5
    z = gaussian_noise(seed, torch.tensor([image]), torch.tensor([candidate]), draw, (3, 3), "cpu")[0].flatten()
    for block in range(3):
        w = reference_philox((block, draw, image, candidate), (seed & MASK32, seed >> 32))
        u = [((x >> 8) + 0.5) * 2.0**-24 for x in w]
        r01, r23 = math.sqrt(-2 * math.log(u[0])), math.sqrt(-2 * math.log(u[2]))
        expected = [r01 * math.cos(2 * math.pi * u[1]), r01 * math.sin(2 * math.pi * u[1])]
        expected += [r23 * math.cos(2 * math.pi * u[3]), r23 * math.sin(2 * math.pi * u[3])]
        count = min(4, 9 - 4 * block)
        np.testing.assert_allclose(z[4 * block : 4 * block + count].numpy(), expected[:count], rtol=1e-5, atol=1e-5)


def test_large_samples_are_standard_normal_and_independent():
    n = 200_000
    images = torch.arange(2000)
    a = gaussian_noise(11, images, torch.zeros(2000, dtype=torch.long), 0, (100,), "cpu").double()
    assert abs(a.mean().item()) < 4 / math.sqrt(a.numel())
    assert abs(a.var().item() - 1) < 4 * math.sqrt(2 / a.numel())
    assert abs(stats.skew(a.flatten().numpy())) < 0.03 and abs(stats.kurtosis(a.flatten().numpy())) < 0.05
    assert stats.kstest(a.flatten().numpy()[:n], "norm").pvalue > 1e-4
    # Neighbouring keys and consecutive draws are uncorrelated (|r| within 5 standard errors of 0).
    others = {
        "next draw": gaussian_noise(11, images, torch.zeros(2000, dtype=torch.long), 1, (100,), "cpu"),
        "next candidate": gaussian_noise(11, images, torch.ones(2000, dtype=torch.long), 0, (100,), "cpu"),
        "next image": gaussian_noise(11, images + 1, torch.zeros(2000, dtype=torch.long), 0, (100,), "cpu"),
        "next seed": gaussian_noise(12, images, torch.zeros(2000, dtype=torch.long), 0, (100,), "cpu"),
    }
    for name, b in others.items():
        r = np.corrcoef(a.flatten().numpy(), b.double().flatten().numpy())[0, 1]
        assert abs(r) < 5 / math.sqrt(a.numel()), name
    # Within a sample: element i against element i+1 (the two halves of a Box-Muller pair included).
    r = np.corrcoef(a[:, :-1].flatten().numpy(), a[:, 1:].flatten().numpy())[0, 1]
    assert abs(r) < 5 / math.sqrt(a.numel())


def test_noise_streams_depend_only_on_their_key():
    both = NoiseStreams(7, torch.tensor([4, 9]), torch.tensor([0, 2]))
    alone = NoiseStreams(7, torch.tensor([9]), torch.tensor([2]))
    for _ in range(3):
        assert torch.equal(both.draw((2, 3), torch.device("cpu"))[1], alone.draw((2, 3), torch.device("cpu"))[0])
    other = NoiseStreams(7, torch.tensor([9, 9, 9]), torch.tensor([2, 3, 2]))
    first = other.draw((5,), torch.device("cpu"))
    assert not torch.equal(first[0], first[1]) and torch.equal(first[0], first[2])
    assert not torch.equal(NoiseStreams(8, torch.tensor([9]), torch.tensor([2])).draw((5,), "cpu")[0], first[0])


class DispatchCount(TorchDispatchMode):
    """Counts the ATen ops dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def dispatched(work) -> int:
    with DispatchCount() as count:
        work()
    return count.ops


def test_ops_dispatched_per_draw_and_per_sampler_step_do_not_grow_with_the_batch():
    def draw(batch: int) -> int:
        images, candidates = torch.arange(batch), torch.zeros(batch, dtype=torch.long)
        return dispatched(lambda: gaussian_noise(0, images, candidates, 0, (3, 8, 8), "cpu"))

    assert draw(4) == draw(512)

    settings = SamplerSettings(10, 0.1, "ddim", "fp32", 1000, 1e-4, 0.02)

    def sampling(batch: int) -> int:
        anchors = torch.rand(batch, 1, 8, 8) * 2 - 1
        images, candidates = torch.arange(batch), torch.zeros(batch, dtype=torch.long)
        return dispatched(
            lambda: sample_positives(lambda x, a, t, w: 0.1 * x, anchors, 0.1, images, candidates, 0, settings)
        )

    sampling(4)  # the first call fills alphas_cumprod's cache (3 ops); run alone, this test would count them once
    assert sampling(4) == sampling(256)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_cpu_give_the_same_noise():
    images, candidates = torch.arange(512), torch.arange(512) % 8
    cpu = gaussian_noise(3, images, candidates, 2, (3, 32, 32), "cpu")
    cuda = gaussian_noise(3, images, candidates, 2, (3, 32, 32), "cuda").cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_sampler_step_on_cuda_never_waits_for_the_device():
    from clsp.diffusion.sampler import interpolation_step, make_scheduler

    settings = SamplerSettings(10, 0.1, "ddim", "fp32", 1000, 1e-4, 0.02)
    scheduler, batch = make_scheduler(settings), 64
    x, anchors = torch.randn(batch, 3, 32, 32, device="cuda"), torch.rand(batch, 3, 32, 32, device="cuda") * 2 - 1
    w = torch.full((batch,), 0.1, device="cuda")
    noise = NoiseStreams(0, torch.arange(batch), torch.zeros(batch, dtype=torch.long))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        for t in scheduler.timesteps.tolist():
            a, z = noise.draw((3, 32, 32), torch.device("cuda")), noise.draw((3, 32, 32), torch.device("cuda"))
            x = interpolation_step(lambda x_t, a_t, tt, ww: 0.1 * x_t, scheduler, x, anchors, t, w, a, z, 0.1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
