import statistics

import pytest

from clsp.evaluation.verdict import differences, headline


def run(label: str, linear: float, few: float | None = None) -> dict:
    m = {
        "run": f"{label}-{linear}",
        "method_label": label,
        "linear": {"top1": linear, "top5": 99.0},
        "knn": {"fixed_top1": 90.0, "best_top1": 91.0},
        "alignment": None,
    }
    if few is not None:
        m["label_efficient"] = {"10%": {"linear_top1": few, "knn_top1": few - 5}}
    return m


def test_ahead_behind_and_within_the_spread_by_hand() -> None:
    runs = [run("CLSP", 95.0, 80.0), run("CLSP", 96.0, 82.0), run("CLSP", 97.0, 84.0)]
    runs += [run("SimCLR", 94.0, 70.0), run("SimCLR", 95.0, 71.0), run("SimCLR", 97.5, 72.0)]
    diffs = {d.metric: d for d in differences(runs, "CLSP", "SimCLR")}
    linear = diffs["linear top-1"]
    assert linear.difference == pytest.approx(96.0 - statistics.mean([94.0, 95.0, 97.5]))
    assert linear.spread == pytest.approx(statistics.stdev([94.0, 95.0, 97.5]))  # the larger of the two stds
    assert linear.outcome == "within" and "no difference beyond the seed spread" in linear.sentence()
    few = diffs["linear 10%"]
    assert few.difference == pytest.approx(11.0) and few.spread == pytest.approx(2.0)
    assert few.outcome == "ahead"
    assert few.sentence() == (
        "linear 10%: CLSP is ahead of SimCLR by more than the seed spread "
        "(CLSP − SimCLR = +11.00 points, larger seed std 2.00)."
    )
    back = {d.metric: d for d in differences(runs, "SimCLR", "CLSP")}["linear 10%"]
    assert back.outcome == "behind" and "SimCLR is behind CLSP" in back.sentence()
    assert diffs["kNN fixed k"].outcome == "within" and diffs["kNN fixed k"].difference == 0
    assert [d.metric for d in headline(list(diffs.values()))] == ["linear 10%", "linear top-1"]


def test_one_seed_has_no_spread_to_judge_by() -> None:
    diffs = differences([run("CLSP", 96.0), run("SimCLR", 90.0)], "CLSP", "SimCLR")
    linear = next(d for d in diffs if d.metric == "linear top-1")
    assert linear.spread is None and linear.outcome == "one seed" and "more seeds" in linear.sentence()
    assert all(not d.metric.endswith("%") for d in diffs)  # no label-efficient figures in these runs
