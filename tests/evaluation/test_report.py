import statistics

import pytest

from clsp.evaluation.evaluate import method_label
from clsp.evaluation.report import comparison_rows, markdown_table


def metrics(run: str, label: str, top1: float, knn: float, align: float | None) -> dict:
    return {
        "run": run,
        "method_label": label,
        "linear": {"top1": top1, "top5": 99.0},
        "knn": {"fixed_top1": knn, "best_top1": knn + 1},
        "alignment": None if align is None else {"synthetic": align, "random_pairs": 1.5},
    }


def test_grouped_rows_are_mean_and_sample_std_per_method() -> None:
    runs = [
        metrics("a0", "SimCLR", 90.0, 80.0, None),
        metrics("b0", "CLSP-SimCLR (λ=1)", 92.5, 81.0, 0.25),
        metrics("a1", "SimCLR", 91.0, 82.0, None),
        metrics("b1", "CLSP-SimCLR (λ=1)", 93.5, 85.0, 0.35),
    ]
    headers, rows = comparison_rows(runs, group=True)
    assert headers[:3] == ["method", "runs", "linear top-1"]
    assert rows[0][:4] == ["SimCLR", "2", f"90.50 ± {statistics.stdev([90.0, 91.0]):.2f}", "99.00 ± 0.00"]
    assert rows[0][-2:] == ["-", "-"]
    assert rows[1][4] == "83.00 ± 2.83"  # stdev of 81, 85 = 2.828
    assert rows[1][6] == "0.300 ± 0.071"
    _, single = comparison_rows(runs, group=False)
    assert [r[1] for r in single] == ["a0", "b0", "a1", "b1"] and single[1][2] == "92.50"


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ({"method": "simclr", "clsp_weight": 0.0}, "SimCLR"),
        ({"method": "moco", "clsp_weight": 0.5, "positive": "synthetic"}, "CLSP-MoCo v2+ (λ=0.5)"),
        ({"method": "simclr", "clsp_weight": 1.0, "positive": "real"}, "SimCLR + real 3rd view (λ=1)"),
    ],
)
def test_method_label(spec: dict, label: str) -> None:
    assert method_label(spec) == label
