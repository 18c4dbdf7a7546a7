"""The linear transfer protocol against scikit-learn's LogisticRegression run the reference's way, the metrics
against hand computations, and the validation split against the reference's shuffle."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from clsp.evaluation.logistic import WEIGHT_DECAYS, accuracy, fit_logistic_regression, linear_transfer, validation_rows


def blobs(n: int, dim: int, classes: int, seed: int, counts: tuple[int, ...] | None = None):
    """Overlapping Gaussian classes (no fit separates them, so every C has a finite optimum)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n) if counts is None else np.repeat(np.arange(classes), counts)
    centres = rng.normal(0, 1.0, (classes, dim))
    return centres[labels] + rng.normal(0, 1.5, (n, dim)), labels


def reference_protocol(train, val, test, mean_per_class: bool):
    """The reference's loop, written with scikit-learn alone: wd ascending, one warm-started LogisticRegression, a
    later C kept only when strictly better, a refit on train + validation at the best C."""
    clf = LogisticRegression(warm_start=True, max_iter=100)  # scikit-learn's lbfgs, multinomial by default

    def score(x, y):
        predicted = clf.predict(x)
        if not mean_per_class:
            return 100 * (predicted == y).mean()
        return 100 * np.mean([(predicted[y == c] == c).mean() for c in np.unique(y)])

    best, best_c = 0.0, None
    for wd in WEIGHT_DECAYS:
        clf.set_params(C=1 / wd)
        clf.fit(*train)
        if score(*val) > best:
            best, best_c = score(*val), 1 / wd
    clf.set_params(C=best_c)
    clf.fit(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    return best_c, best, score(*test)


@pytest.mark.parametrize(("seed", "counts"), [(0, None), (1, (250, 100, 40)), (2, None)])
def test_the_protocol_chooses_the_c_and_accuracy_scikit_learn_does(seed: int, counts) -> None:
    x, y = blobs(420 if counts is None else sum(counts), 5, 3, seed, counts)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    rest, test = order[:300], order[300:]
    train, val = validation_rows(len(rest))
    split = {"train": rest[train], "val": rest[val], "test": test}
    metric = "top1" if counts is None else "mean_per_class"
    expected_c, expected_val, expected_test = reference_protocol(
        *((x[split[s]], y[split[s]]) for s in ("train", "val", "test")), metric == "mean_per_class"
    )
    as_torch = {s: (torch.from_numpy(x[r]), torch.from_numpy(y[r])) for s, r in split.items()}
    fit = linear_transfer(as_torch["train"], as_torch["val"], as_torch["test"], metric)
    assert pytest.approx(expected_c) == fit.C and fit.validation_score == pytest.approx(expected_val)
    assert (fit.top1 if metric == "top1" else fit.mean_per_class) == pytest.approx(expected_test)
    assert len(fit.validation_scores) == len(WEIGHT_DECAYS) == 45


def test_a_converged_fit_is_scikit_learn_s_optimum_in_float64() -> None:
    x, y = blobs(300, 6, 4, seed=np.random.SeedSequence().entropy % 2**32)
    for C in (1e-3, 1.0, 1e3):
        reference = LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(x, y)
        fit = fit_logistic_regression(
            torch.from_numpy(x), torch.from_numpy(y), C, 4, max_iterations=5000, tolerance=1e-9
        )
        np.testing.assert_allclose(
            fit.weight.T.numpy(), reference.coef_, atol=1e-4 * max(1, abs(reference.coef_).max())
        )
        np.testing.assert_allclose(
            fit.bias.numpy(), reference.intercept_, atol=1e-4 * max(1, abs(reference.coef_).max())
        )


def test_mean_per_class_accuracy_by_hand_on_an_imbalanced_set() -> None:
    truth = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    assert accuracy(predicted, truth, "top1") == pytest.approx(100 * 5 / 7)
    assert accuracy(predicted, truth, "mean_per_class") == pytest.approx(100 * (3 / 4 + 1 / 1 + 1 / 2) / 3)


def test_the_validation_split_is_the_reference_s_shuffle_and_a_function_of_the_seed() -> None:
    indices = list(range(103))
    np.random.seed(0)
    np.random.shuffle(indices)  # the reference: seed 0, shuffle, the first floor(0.2 n) validate
    train, val = validation_rows(103)
    assert val.tolist() == sorted(indices[:20]) and train.tolist() == sorted(indices[20:])
    np.random.seed(123)  # numpy's global state plays no part
    assert [r.tolist() for r in validation_rows(103)] == [train.tolist(), val.tolist()]
    assert validation_rows(103, seed=1)[1].tolist() != val.tolist()
