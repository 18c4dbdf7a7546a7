import statistics

import numpy as np
import pytest
import torch

from clsp.evaluation.label_efficient import balanced_subset, fraction_label, label_efficient_eval
from clsp.evaluation.report import comparison_rows

LABELS = np.repeat(np.arange(10), [120, 130, 140, 150, 160, 110, 100, 135, 145, 157])  # 1,347 images


@pytest.mark.parametrize(("fraction", "per_class"), [(0.01, 1), (0.1, 13), (0.0001, 1)])
def test_subsets_are_class_balanced_with_at_least_one_image_per_class(fraction: float, per_class: int) -> None:
    rows = balanced_subset(LABELS, fraction, seed=0, draw=0)
    assert np.array_equal(np.bincount(LABELS[rows], minlength=10), np.full(10, per_class))
    assert len(np.unique(rows)) == len(rows) and np.all(np.diff(rows) > 0)


def test_draws_are_fixed_by_seed_and_differ_between_draws() -> None:
    first = balanced_subset(LABELS, 0.1, seed=3, draw=1)
    assert np.array_equal(first, balanced_subset(LABELS, 0.1, seed=3, draw=1))
    assert not np.array_equal(first, balanced_subset(LABELS, 0.1, seed=3, draw=2))
    assert not np.array_equal(first, balanced_subset(LABELS, 0.1, seed=4, draw=1))


def test_a_class_smaller_than_its_share_gives_all_its_images() -> None:
    labels = np.array([0] * 50 + [1] * 2)
    assert np.bincount(labels[balanced_subset(labels, 0.5, seed=0, draw=0)]).tolist() == [13, 2]


def test_label_efficient_eval_on_separable_features() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.from_numpy(LABELS)
    centres = torch.randn(10, 16, generator=gen) * 4
    train = centres[labels] + torch.randn(len(labels), 16, generator=gen)
    test_labels = torch.arange(10).repeat(30)
    test = centres[test_labels] + torch.randn(len(test_labels), 16, generator=gen)
    result = label_efficient_eval(
        train, labels, test, test_labels, train_features_flipped=None, fractions=(0.01, 0.1), draws=3, seed=0,
        epochs=20, lr=1.0, milestones=(12, 16), batch_size=256, knn_k=20, knn_temperature=0.07,
    )  # fmt: skip
    assert list(result) == ["1%", "10%"]
    one, ten = result["1%"], result["10%"]
    assert one["images"] == 10 and ten["images"] == 130 and one["knn_k"] == 10 and ten["knn_k"] == 20
    assert one["linear_top1"] == pytest.approx(statistics.mean(one["linear_by_draw"]))
    assert one["knn_top1_std"] == pytest.approx(statistics.stdev(one["knn_by_draw"]))
    assert ten["linear_top1"] > 90 and ten["knn_top1"] > 90  # well-separated clusters


def test_comparison_has_a_column_pair_per_fraction() -> None:
    def run(name: str, linear: float) -> dict:
        few = {"1%": {"linear_top1": linear, "knn_top1": linear - 1}, "10%": {"linear_top1": 90.0, "knn_top1": 80.0}}
        return {
            "run": name, "method_label": "SimCLR", "linear": {"top1": 95.0, "top5": 99.0},
            "knn": {"fixed_top1": 94.0, "best_top1": 95.0}, "alignment": None, "label_efficient": few,
        }  # fmt: skip

    headers, rows = comparison_rows([run("a", 60.0), run("b", 70.0)], group=True)
    assert headers[6:10] == ["linear 1%", "kNN 1%", "linear 10%", "kNN 10%"]
    assert rows[0][6] == f"65.00 ± {statistics.stdev([60.0, 70.0]):.2f}" and rows[0][9] == "80.00 ± 0.00"
    assert fraction_label(0.01) == "1%" and fraction_label(0.1) == "10%"
