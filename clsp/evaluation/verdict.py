"""A verdict the numbers make: is one method ahead of another by more than the seed spread?

For each compared metric: the mean over seeds of each method, their difference, and the larger of the two sample
standard deviations over seeds (the spread). "Ahead" or "behind" only when the difference exceeds that spread; with
fewer than two seeds per method there is no spread to judge by and the verdict says so.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from clsp.evaluation.report import ALIGNMENT_COLUMNS, Metrics, columns

Outcome = Literal["ahead", "behind", "within", "one seed"]


@dataclass(frozen=True)
class Difference:
    """``a`` − ``b`` on one metric, over seeds."""

    metric: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    spread: float | None
    """The larger seed std of the two methods; None with fewer than two runs of either."""

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def outcome(self) -> Outcome:
        if self.spread is None:
            return "one seed"
        if abs(self.difference) <= self.spread:
            return "within"
        return "ahead" if self.difference > 0 else "behind"

    def sentence(self) -> str:
        diff = f"{self.a} − {self.b} = {self.difference:+.2f} points"
        if self.outcome == "one seed":
            return f"{self.metric}: {diff} from one seed each; run more seeds (--seed) to compare with the spread."
        spread = f"larger seed std {self.spread:.2f}"
        if self.outcome == "within":
            return f"{self.metric}: no difference beyond the seed spread ({diff}, {spread})."
        word = "ahead of" if self.outcome == "ahead" else "behind"
        return f"{self.metric}: {self.a} is {word} {self.b} by more than the seed spread ({diff}, {spread})."


def differences(runs: Sequence[Metrics], a: str, b: str) -> list[Difference]:
    """``a`` − ``b`` (method labels) on every accuracy column of :func:`~clsp.evaluation.report.columns`."""
    table = columns(runs)
    accuracy = [name for name in table if name not in ALIGNMENT_COLUMNS]
    out = []
    for name in accuracy:
        values = {
            label: [v for m in runs if m["method_label"] == label and (v := table[name](m)) is not None]
            for label in (a, b)
        }
        if not values[a] or not values[b]:
            continue
        enough = min(len(values[a]), len(values[b])) >= 2
        spread = max(statistics.stdev(values[a]), statistics.stdev(values[b])) if enough else None
        out.append(Difference(name, a, b, statistics.mean(values[a]), statistics.mean(values[b]), spread))
    return out


def headline(diffs: Sequence[Difference]) -> list[Difference]:
    """The linear probes that decide the verdict: the label-efficient ones (fewest labels first: the most sensitive
    to representation quality), then full-label top-1."""
    few = [d for d in diffs if d.metric.startswith("linear ") and d.metric.endswith("%")]
    full = [d for d in diffs if d.metric == "linear top-1"]
    return sorted(few, key=lambda d: float(d.metric.split()[1][:-1])) + full
