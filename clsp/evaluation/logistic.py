"""The linear transfer protocol on frozen features (Kornblith et al., CVPR 2019, as Ericsson et al., CVPR 2021, run it
in linusericsson/ssl-transfer): a multinomial logistic regression fitted with L-BFGS, its L2 strength chosen on a
validation split from a log-spaced grid, refitted on train + validation and scored on test.

The fit minimises scikit-learn's objective, ``C * sum_i CE_i + ||W||^2 / 2`` (the bias is not penalised; divided by
``C * n`` as scikit-learn does), in torch on the features' device, float64, with the reference's settings: scikit-learn's
defaults of at most 100 L-BFGS iterations per C and a gradient tolerance of 1e-4, each fit warm-started from the
previous C's, the grid walked from the weakest regularisation up. torch's L-BFGS is not scipy's, so where 100
iterations stop short of the optimum the two can stop at slightly different points; converged fits agree.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

WEIGHT_DECAYS = tuple(float(wd) for wd in np.logspace(-6, 5, 45))
"""The reference's grid: ``C = 1 / wd`` for each."""
VALIDATION_FRACTION = 0.2
"""Of the training split held out for choosing C when the dataset has no official validation split."""
GRADIENT_TOLERANCE = 1e-4
"""Max |gradient| of the scaled objective at which a fit stops (scikit-learn's default ``tol``)."""
MAX_ITERATIONS = 100
"""L-BFGS iterations per fit (scikit-learn's default ``max_iter``, which the reference keeps)."""

Metric = Literal["top1", "mean_per_class"]


def validation_rows(n: int, seed: int = 0, fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, validation)`` row indices of ``n`` training images: the reference's random split (numpy's
    legacy generator seeded with ``seed`` shuffles ``0..n-1``; the first ``floor(fraction * n)`` are validation)."""
    order = np.random.RandomState(seed).permutation(n)
    cut = int(np.floor(fraction * n))
    return np.sort(order[cut:]), np.sort(order[:cut])


def accuracy(predicted: Tensor, truth: Tensor, metric: Metric) -> float:
    """Top-1 accuracy, or the mean over the classes present in ``truth`` of each class's accuracy, in %."""
    correct = (predicted == truth).double()
    if metric == "top1":
        return 100.0 * correct.mean().item()
    classes, index = torch.unique(truth, return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64, device=truth.device).index_add_(0, index, correct)
    counts = torch.bincount(index, minlength=len(classes)).double()
    return 100.0 * (per_class / counts).mean().item()


@dataclass
class LogisticRegression:
    """Multinomial logistic regression: ``weight`` float64 ``[D, K]``, ``bias`` ``[K]``."""

    weight: Tensor
    bias: Tensor

    def predict(self, features: Tensor) -> Tensor:
        """int64 ``[N]`` class indices of float ``[N, D]`` features."""
        return (features.double() @ self.weight + self.bias).argmax(1)


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    C: float,
    num_classes: int,
    start: LogisticRegression | None = None,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = GRADIENT_TOLERANCE,
) -> LogisticRegression:
    """Minimise ``C * sum CE + ||W||^2 / 2`` over float ``[N, D]`` ``features`` and int64 ``[N]`` ``labels`` with
    L-BFGS (strong Wolfe line search) from ``start`` (a warm start) or zeros, on the features' device."""
    x = features.double()
    n, d = x.shape
    weight = start.weight.clone() if start else torch.zeros(d, num_classes, dtype=torch.float64, device=x.device)
    bias = start.bias.clone() if start else torch.zeros(num_classes, dtype=torch.float64, device=x.device)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=max_iterations,
        tolerance_grad=tolerance,
        tolerance_change=1e-12,
        history_size=10,  # scipy's L-BFGS-B default (maxcor)
        line_search_fn="strong_wolfe",
    )
    scale = 1.0 / (C * n)  # the objective divided by C * n: the same minimiser, gradients of order 1
    rows = torch.arange(n, device=x.device)

    @torch.no_grad()
    def objective() -> Tensor:
        """The scaled objective, its gradient written into ``.grad`` by hand (no autograd graph: 1.7x faster)."""
        log_p = torch.addmm(bias, x, weight).log_softmax(1)
        loss = -log_p[rows, labels].mean() + 0.5 * scale * (weight * weight).sum()
        residual = log_p.exp_()  # softmax - one-hot, over n: d(mean CE)/d logits
        residual[rows, labels] -= 1
        residual /= n
        weight.grad = torch.addmm(weight, x.T, residual, beta=scale)
        bias.grad = residual.sum(0)
        return loss

    optimizer.step(objective)
    return LogisticRegression(weight, bias)


@dataclass(frozen=True)
class TransferFit:
    """What the protocol chose and scored (accuracies in %)."""

    C: float
    validation_score: float
    """The chosen C's score on the validation split, in the dataset's metric."""
    top1: float
    mean_per_class: float
    validation_scores: tuple[float, ...]
    """One per C of the grid, in grid order."""


def linear_transfer(
    train: tuple[Tensor, Tensor],
    validation: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    metric: Metric,
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
    on_fit: Callable[[], None] = lambda: None,
) -> TransferFit:
    """The protocol on ``(features float [N, D], labels int64 [N])`` pairs: for each ``C = 1 / wd``, in increasing
    wd, a fit on ``train`` warm-started from the previous one and scored on ``validation`` in ``metric``; the first
    best C (the reference keeps a later C only when it scores strictly higher) refitted on train + validation,
    warm-started from that fit, and scored on ``test``. ``on_fit`` is called after every fit (progress)."""
    num_classes = int(max(labels.max() for _, labels in (train, validation, test))) + 1
    scores: dict[float, float] = {}
    fits: dict[float, LogisticRegression] = {}
    model = None
    for wd in sorted(weight_decays):
        model = fits[wd] = fit_logistic_regression(*train, 1.0 / wd, num_classes, model)
        scores[wd] = accuracy(model.predict(validation[0]), validation[1], metric)
        on_fit()
    best_wd = min(scores, key=lambda wd: (-scores[wd], wd))
    both = (torch.cat([train[0], validation[0]]), torch.cat([train[1], validation[1]]))
    final = fit_logistic_regression(*both, 1.0 / best_wd, num_classes, fits[best_wd])
    on_fit()
    predicted = final.predict(test[0])
    return TransferFit(
        C=1.0 / best_wd,
        validation_score=scores[best_wd],
        top1=accuracy(predicted, test[1], "top1"),
        mean_per_class=accuracy(predicted, test[1], "mean_per_class"),
        validation_scores=tuple(scores[wd] for wd in weight_decays),
    )
