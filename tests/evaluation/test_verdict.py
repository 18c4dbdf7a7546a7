import pytest

from clsp.evaluation.verdict import differences, headline, t_interval

T_975_2DF = 4.302652729749464  # Student t, 97.5th percentile, 2 degrees of freedom (printed tables: 4.303)


def run(label: str, seed: int, linear: float, few: float | None = None) -> dict:
    m = {
        "run": f"seed{seed}/{label}",
        "seed": seed,
        "method_label": label,
        "linear": {"top1": linear, "top5": 99.0},
        "knn": {"fixed_top1": 90.0, "best_top1": 91.0},
        "alignment": None,
    }
    if few is not None:
        m["label_efficient"] = {"10%": {"linear_top1": few, "knn_top1": few - 5}}
    return m


def test_t_interval_by_hand() -> None:
    # d = 10, 11, 12: mean 11, sd 1, half-width t * 1 / sqrt(3)
    lo, hi = t_interval([10.0, 11.0, 12.0])
    half = T_975_2DF / 3**0.5
    assert (lo, hi) == pytest.approx((11 - half, 11 + half))
    assert (lo, hi) == pytest.approx((8.51586, 13.48414), abs=1e-5)
    assert t_interval([2.0, 2.0]) == (2.0, 2.0)  # no spread: a point
    assert t_interval([1.0]) is None


def test_paired_intervals_decide_ahead_behind_and_no_difference() -> None:
    # Listed out of seed order: pairing is by seed, not by position.
    runs = [run("CLSP", 0, 95.0, 80.0), run("CLSP", 2, 97.0, 84.0), run("CLSP", 1, 96.0, 82.0)]
    runs += [run("SimCLR", 1, 95.0, 71.0), run("SimCLR", 0, 94.0, 70.0), run("SimCLR", 2, 97.5, 72.0)]
    diffs = {d.metric: d for d in differences(runs, "CLSP", "SimCLR")}
    linear = diffs["linear top-1"]
    assert linear.seeds == (0, 1, 2) and linear.per_seed == pytest.approx((1.0, 1.0, -0.5))
    half = T_975_2DF * 0.75**0.5 / 3**0.5  # sd of (1, 1, -0.5) is sqrt(0.75)
    assert linear.difference == pytest.approx(0.5)
    assert linear.interval == pytest.approx((0.5 - half, 0.5 + half))
    assert linear.outcome == "no difference"
    assert linear.sentence() == (
        "linear top-1: no difference shown (CLSP − SimCLR = +0.50 points, 95% CI [-1.65, +2.65] over 3 paired "
        "seeds includes 0)."
    )
    few = diffs["linear 10%"]
    assert few.outcome == "ahead" and few.interval == pytest.approx((8.51586, 13.48414), abs=1e-5)
    assert few.sentence() == (
        "linear 10%: CLSP is ahead of SimCLR (CLSP − SimCLR = +11.00 points, 95% CI [+8.52, +13.48] over 3 paired seeds)."
    )
    back = {d.metric: d for d in differences(runs, "SimCLR", "CLSP")}["linear 10%"]
    assert back.outcome == "behind" and back.interval_text() == "[-13.48, -8.52]"
    assert diffs["kNN fixed k"].interval == (0.0, 0.0) and diffs["kNN fixed k"].outcome == "no difference"
    assert [d.metric for d in headline(list(diffs.values()))] == ["linear top-1", "linear 10%"]


def test_a_seed_only_one_method_has_is_left_out() -> None:
    runs = [run("CLSP", 0, 96.0), run("CLSP", 1, 97.0), run("SimCLR", 0, 90.0), run("SimCLR", 5, 99.0)]
    linear = next(d for d in differences(runs, "CLSP", "SimCLR") if d.metric == "linear top-1")
    assert linear.seeds == (0,) and linear.difference == 6.0
    assert linear.interval is None and linear.outcome == "one seed" and "more seeds" in linear.sentence()
