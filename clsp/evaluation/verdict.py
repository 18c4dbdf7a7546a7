"""A verdict the numbers make: is one method ahead of another, with a 95 % confidence interval over paired seeds?

For each compared metric, runs of the two methods are paired by seed (same seed: same data order, augmentation draws
and label subsets), and the interval is Student's t over the per-seed differences d_s = a_s − b_s:
``mean(d) ± t(0.975, n−1) · sd(d) / √n``. A method is called ahead or behind only when the interval excludes 0.

Why a t-interval over seeds and not a bootstrap: the seed is the unit that is replicated (it draws the whole
training run, whose variance dominates), so resampling test images alone would ignore most of the noise, and a
bootstrap over 3 seeds has only 10 distinct resamples; the t-interval is exact for normal per-seed differences and
honest (wide) for few seeds. With fewer than two paired seeds there is no interval and the verdict says so.
"""

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.stats import t as student_t

from clsp.evaluation.report import ALIGNMENT_COLUMNS, Metrics, columns

Outcome = Literal["ahead", "behind", "no difference", "one seed"]
CONFIDENCE = 0.95


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The two-sided Student-t confidence interval of the mean of ``values``; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean, half = statistics.mean(values), 0.0
    sd = statistics.stdev(values)
    if sd > 0:
        half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class Difference:
    """``a`` − ``b`` on one metric, over the seeds both were run with."""

    metric: str
    a: str
    b: str
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]
    """a − b for each seed of ``seeds``."""

    @property
    def difference(self) -> float:
        return statistics.mean(self.per_seed)

    @property
    def interval(self) -> tuple[float, float] | None:
        return t_interval(self.per_seed)

    @property
    def outcome(self) -> Outcome:
        interval = self.interval
        if interval is None:
            return "one seed"
        if interval[0] > 0:
            return "ahead"
        return "behind" if interval[1] < 0 else "no difference"

    def interval_text(self) -> str:
        lo, hi = self.interval or (math.nan, math.nan)
        return "-" if self.interval is None else f"[{lo:+.2f}, {hi:+.2f}]"

    def sentence(self) -> str:
        diff = f"{self.a} − {self.b} = {self.difference:+.2f} points"
        if self.outcome == "one seed":
            return f"{self.metric}: {diff} from one paired seed; run more seeds (--seed) for an interval."
        ci = f"95% CI {self.interval_text()} over {len(self.seeds)} paired seeds"
        if self.outcome == "no difference":
            return f"{self.metric}: no difference shown ({diff}, {ci} includes 0)."
        word = "ahead of" if self.outcome == "ahead" else "behind"
        return f"{self.metric}: {self.a} is {word} {self.b} ({diff}, {ci})."


def differences(runs: Sequence[Metrics], a: str, b: str) -> list[Difference]:
    """``a`` − ``b`` (method labels) on every accuracy column of :func:`~clsp.evaluation.report.columns`, paired
    by each run's ``seed``."""
    table = columns(runs)
    out = []
    for name in (n for n in table if n not in ALIGNMENT_COLUMNS):
        values = {
            label: {m["seed"]: v for m in runs if m["method_label"] == label and (v := table[name](m)) is not None}
            for label in (a, b)
        }
        seeds = tuple(sorted(values[a].keys() & values[b].keys()))
        if seeds:
            out.append(Difference(name, a, b, seeds, tuple(values[a][s] - values[b][s] for s in seeds)))
    return out


def headline(diffs: Sequence[Difference]) -> list[Difference]:
    """The linear probes that decide the verdict: full-label top-1 (the paper's metric), then the label-efficient
    ones, fewest labels first, then each transfer target's linear protocol."""
    few = [d for d in diffs if d.metric.startswith("linear ") and d.metric.endswith("%")]
    full = [d for d in diffs if d.metric == "linear top-1"]
    transfer = [d for d in diffs if d.metric.startswith("transfer ")]
    return full + sorted(few, key=lambda d: float(d.metric.split()[1][:-1])) + transfer
