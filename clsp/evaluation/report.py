"""Tables from ``metrics.json`` files: one run's ``report.md``, and side-by-side comparisons with mean ± std."""

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clsp.atomic import atomic_write_text

METRICS_FILE = "metrics.json"
"""``clsp eval``'s figures of a run, in ``<run>/eval/``; :func:`write_report` renders them as ``report.md``."""

Metrics = dict[str, Any]

ACCURACY_COLUMNS: dict[str, Callable[[Metrics], float | None]] = {
    "linear top-1": lambda m: m["linear"]["top1"],
    "linear top-5": lambda m: m["linear"]["top5"],
    "kNN fixed k": lambda m: m["knn"]["fixed_top1"],
    "kNN best k": lambda m: m["knn"]["best_top1"],
}
ALIGNMENT_COLUMNS: dict[str, Callable[[Metrics], float | None]] = {
    "align synth": lambda m: m["alignment"]["synthetic"] if m["alignment"] else None,
    "align views": lambda m: m["alignment"].get("two_views") if m["alignment"] else None,
    "align random": lambda m: m["alignment"]["random_pairs"] if m["alignment"] else None,
}
"""The compared numbers: top-1/top-5 accuracies in % (kNN at the config's fixed k and at the best k of the grid),
then (:func:`columns`) linear and kNN top-1 from each label fraction, mean over label draws; alignment as mean ‖f̂(x) − f̂(s)‖² of normalised backbone features: anchor vs synthetic positive, two augmented
views of one image, and random pairs."""


def _fmt(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    digits = 3 if max(abs(v) for v in present) < 10 else 2
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{statistics.mean(present):.{digits}f} ± {statistics.stdev(present):.{digits}f}"


def _label_efficient(m: Metrics, fraction: str, key: str) -> float | None:
    return (m.get("label_efficient") or {}).get(fraction, {}).get(key)


def _transfer(m: Metrics, target: str) -> float | None:
    return ((m.get("transfer") or {}).get(target) or {}).get("score")


def columns(runs: Sequence[Metrics]) -> dict[str, Callable[[Metrics], float | None]]:
    """The accuracy columns, one linear and one kNN column per label fraction any run has, one ``transfer <target>``
    column (the target's own metric) per transfer target any run has, the alignment columns."""
    fractions = sorted({f for m in runs for f in m.get("label_efficient") or {}}, key=lambda f: float(f[:-1]))
    few: dict[str, Callable[[Metrics], float | None]] = {}
    for f in fractions:
        few[f"linear {f}"] = lambda m, f=f: _label_efficient(m, f, "linear_top1")
        few[f"kNN {f}"] = lambda m, f=f: _label_efficient(m, f, "knn_top1")
    targets = sorted({t for m in runs for t in m.get("transfer") or {}})
    transfer = {f"transfer {t}": lambda m, t=t: _transfer(m, t) for t in targets}
    return {**ACCURACY_COLUMNS, **few, **transfer, **ALIGNMENT_COLUMNS}


def comparison_rows(runs: Sequence[Metrics], group: bool) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a comparison: one row per run, or with ``group`` one row per method with mean ± std
    (sample standard deviation) over its runs and the run count."""
    table = columns(runs)
    headers = ["method", "runs" if group else "run", *table]
    groups: dict[str, list[Metrics]] = {}
    for m in runs:
        groups.setdefault(m["method_label"] if group else m["run"], []).append(m)
    rows = []
    for key, members in groups.items():
        first = [members[0]["method_label"], str(len(members)) if group else key]
        rows.append(first + [_fmt([get(m) for m in members]) for get in table.values()])
    return headers, rows


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _label_efficient_lines(few: Metrics) -> list[str]:
    if not few:
        return []
    parts = [
        f"{name}: {r['images']} images, linear {r['linear_top1']:.2f} ± {r['linear_top1_std']:.2f}, "
        f"kNN (k={r['knn_k']}) {r['knn_top1']:.2f} ± {r['knn_top1_std']:.2f}"
        for name, r in few.items()
    ]
    draws = next(iter(few.values()))["draws"]
    return [
        f"- Label-efficient (columns `linear N%`, `kNN N%`): probe and kNN from a class-balanced fraction of the "
        f"labels, mean ± std over {draws} label draws, same SGD step count as the full probe; " + "; ".join(parts) + "."
    ]


def _quality_section(scores: Metrics | None) -> list[str]:
    if not scores:
        return []
    from clsp.positives.quality import quality_rows

    rows = [[name, value] for name, value in quality_rows(scores).items()]
    return [
        f"## Positive quality (`{scores['store']}`)\n",
        markdown_table(["measure", "value"], rows),
        "Class kept and off-manifold come from a logistic regression fit on real labelled training pixels only; "
        "hardness compares anchor-candidate distance with two augmented views of one image (same object, easy) "
        "and random pairs (unrelated). `clsp positives score` / `clsp positives sweep` explain more.\n",
    ]


def _transfer_section(transfer: Metrics) -> list[str]:
    if not transfer:
        return []
    headers, rows = transfer_table(transfer)
    return [
        "## Transfer (`clsp transfer`, docs/transfer.md)\n",
        markdown_table(headers, rows),
        "Frozen features, no augmentation; multinomial logistic regression (L-BFGS), C = 1/wd chosen over wd in "
        "logspace(-6, 5, 45) on the validation split by the target's metric, refitted on train + validation, "
        "scored on test (Kornblith et al. 2019; Ericsson et al. 2021); kNN: the train + validation features as the "
        "bank, cosine votes. Column `transfer <target>` of `clsp compare` is the target's metric.\n",
    ]


def write_report(metrics: Metrics, path: Path) -> Path:
    """``report.md`` for one evaluated run: the headline table, kNN over k, the alignment term and the plots."""
    knn, linear = metrics["knn"], metrics["linear"]
    headers, rows = comparison_rows([metrics], group=False)
    parts = [
        f"# Evaluation of `{metrics['run']}`: {metrics['method_label']}\n",
        f"Backbone {metrics['ssl']['backbone']}, {metrics['ssl']['epochs']} SSL epochs. "
        f"Probe and kNN bank: {metrics['dataset']['train']} ({metrics['dataset']['num_train']} images); "
        f"test: {metrics['dataset']['test']} ({metrics['dataset']['num_test']} images); "
        f"both at {metrics['dataset']['image_size']} px.\n",
        markdown_table(headers, rows),
        f"- Linear probe: frozen backbone, {linear['epochs']} epochs of SGD (lr {linear['lr']:g}, ×0.1 at the "
        f"milestones), {'flip-only augmentation' if linear['flip_augmentation'] else 'no augmentation'}, "
        "final-epoch accuracy.",
        f"- kNN: cosine, votes exp(s/{knn['temperature']:g}); {knn['note']}.",
        *_label_efficient_lines(metrics.get("label_efficient") or {}),
        "- Alignment: mean ‖f̂(x) − f̂(s)‖² (= 2 − 2·cos) between the normalised backbone features of an anchor and "
        "its synthetic positives, beside the same for two augmented views of one image and for random pairs of "
        "training images; lower = closer.\n",
        *_transfer_section(metrics.get("transfer") or {}),
        *_quality_section(metrics.get("positives_quality")),
        "## kNN top-1 over k\n",
        markdown_table(["k", *knn["top1_by_k"]], [["top-1 %", *(f"{v:.2f}" for v in knn["top1_by_k"].values())]]),
        "## Plots\n",
        *(f"![{name}]({Path(file).name})\n" for name, file in metrics["files"].items()),
    ]
    return atomic_write_text(path, "\n".join(parts))


def transfer_table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of ``clsp transfer``'s table (accuracies in %) of one or more targets' results."""
    headers = [
        "target",
        "metric",
        "top-1",
        "per-class",
        "C",
        "val",
        f"kNN {next(iter(results.values()))['knn_k']}",
        "train/val/test",
        "val split",
    ]
    rows = [
        [
            label,
            r["metric"],
            f"{r['top1']:.2f}",
            f"{r['mean_per_class']:.2f}",
            f"{r['C']:.3g}",
            f"{r['validation_score']:.2f}",
            f"{r['knn_top1']:.2f}",
            f"{r['num_train']}/{r['num_val']}/{r['num_test']}",
            r["validation"],
        ]
        for label, r in results.items()
    ]
    return headers, rows
