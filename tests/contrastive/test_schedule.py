"""Learning-rate and momentum schedules against the values logged by the reference (method.md 3.4, 3.5)."""

import math

import pytest

from clsp.contrastive.schedule import learning_rate, moco_momentum


def paper_lr(e: int, base: float) -> float:
    return 1e-3 + e * (base - 1e-3) / 9 if e < 10 else 0.5 * base * (1 + math.cos(math.pi * (e - 10) / 990))


@pytest.mark.parametrize("base", [0.5, 0.3])
def test_learning_rate_follows_the_paper_formula(base):
    for e in [0, 1, 5, 9, 10, 11, 500, 999, 1000]:
        assert learning_rate(e, base, 1000, 10, 1e-3, 0.0) == pytest.approx(paper_lr(e, base), abs=1e-12)


def test_logged_epoch_one_values():
    assert learning_rate(1, 0.5, 1000, 10, 1e-3, 0.0) == pytest.approx(0.05644, abs=1e-5)
    assert learning_rate(1, 0.3, 1000, 10, 1e-3, 0.0) == pytest.approx(0.03422, abs=1e-5)


def test_no_warmup_and_min_lr():
    assert learning_rate(0, 0.5, 10, 0, 1e-3, 0.0) == 0.5
    assert learning_rate(10, 0.5, 10, 0, 1e-3, 1e-6) == pytest.approx(1e-6)


def test_moco_momentum_goes_from_start_to_end_by_cosine():
    assert moco_momentum(0, 100, 0.99, 0.999) == pytest.approx(0.99)
    assert moco_momentum(50, 100, 0.99, 0.999) == pytest.approx(0.9945)
    assert moco_momentum(100, 100, 0.99, 0.999) == pytest.approx(0.999)
