"""``clsp demo``: every stage on one config (by default the embedded digits), CLSP against its baseline and the
paper's control, with a verdict computed from the numbers.

Trains the DDPM (or, with ``diffusion.pretrained``, samples with a trained one), generates and scores the positives,
then for each seed (3 by default) trains the baseline (λ = 0), the CLSP variant (λ = ``ssl.clsp_weight``) and the
control (the same λ on a third real augmented view) with the same budget and seed, evaluates them (full-label and
label-efficient probes), and writes side-by-side tables, the CLSP − baseline and CLSP − control differences with
their seed spread, and a verdict sentence per headline probe.

Layout under ``<run.output_dir>``: ``unet/``, ``diffusion/``, ``positives/`` (shared), ``seed<S>/<variant>/``
(``ssl/`` and ``eval/`` of each run), ``curves.png``, ``demo.md``, ``demo.json`` and ``stages.json``, the ledger
of finished stages with their wall time: a rerun skips finished stages and resumes an interrupted one.
``demo.json``'s ``encoder`` names the run whose encoder is the demo's result (the CLSP variant of the first seed):
the one ``clsp export`` and ``clsp features`` use for the demo's folder.
"""

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clsp.atomic import atomic_write_text
from clsp.config import Config, load_config, save_resolved_config
from clsp.errors import ClspError
from clsp.progress import console, print_table

QUICK_OVERRIDES = (
    "diffusion.pretrained=null",
    "diffusion.unet=tiny",
    "diffusion.epochs=2",
    "diffusion.warmup_steps=10",
    "diffusion.num_samples=16",
    "positives.num_candidates=1",
    "positives.num_steps=5",
    "ssl.num_candidates=1",
    "ssl.epochs=2",
    "ssl.warmup_epochs=0",
    "eval.linear_epochs=10",
    "eval.linear_milestones=[6, 8]",
)
"""``--quick``: a smoke test of every stage in about a minute (one seed); its numbers mean nothing."""
DEFAULT_SEEDS = 3
"""Seeds every variant is trained with unless ``--seed`` says otherwise: a verdict needs a seed spread."""
RESULT_FILE = "demo.json"


@dataclass(frozen=True)
class Variant:
    name: str
    """Folder name under ``seed<S>/``."""
    clsp_weight: float
    positive: str = "synthetic"


def variants(cfg: Config) -> tuple[Variant, Variant, Variant]:
    """The baseline (λ = 0), the CLSP variant of ``cfg.ssl.method`` (λ from the config, 1.0 when it is 0) and the
    paper's control: the same λ on a third *real* augmented view instead of the synthetic positive (method.md 5.2)."""
    weight = cfg.ssl.clsp_weight or 1.0
    method = cfg.ssl.method
    return (
        Variant(method, 0.0),
        Variant(f"clsp-{method}", weight),
        Variant(f"{method}-real3", weight, positive="real"),
    )


def run_config(cfg: Config, seed: int, variant: Variant) -> Config:
    """The config of one SSL run: its own folder and seed, the shared positive store."""
    run = cfg.model_copy(deep=True)
    run.ssl.positives = cfg.ssl.positives or cfg.run.output_dir / "positives"
    run.ssl.clsp_weight = variant.clsp_weight
    run.ssl.positive = variant.positive
    run.run.seed = seed
    run.run.output_dir = cfg.run.output_dir / f"seed{seed}" / variant.name
    return run


def result_encoder(cfg: Config, seeds: Sequence[int]) -> dict[str, Any]:
    """The encoder that stands for the demo's result: the CLSP variant's of the first seed, its run folder
    relative to ``run.output_dir`` (``{"run": "seed0/clsp-simclr", "variant": "clsp-simclr", "seed": 0}``)."""
    variant = variants(cfg)[1]
    run = run_config(cfg, seeds[0], variant).run.output_dir
    return {"run": run.relative_to(cfg.run.output_dir).as_posix(), "variant": variant.name, "seed": seeds[0]}


def demo_result_run(root: Path) -> tuple[Path, str] | None:
    """The run folder of the encoder that ``root/demo.json`` records as the demo's result and a phrase saying so;
    None when ``root`` holds no finished demo."""
    path = root / RESULT_FILE
    if not path.is_file():
        return None
    try:
        encoder = json.loads(path.read_text())["encoder"]
        run, variant, seed = root / encoder["run"], encoder["variant"], encoder["seed"]
    except (ValueError, KeyError, TypeError):
        return None  # an older demo.json: no recorded result
    return run, f"the demo's result in {RESULT_FILE}: {variant}, seed {seed}"


class StageLedger:
    """``stages.json``: the wall time of every finished stage, tied to a hash of the resolved config (a rerun with
    more seeds reuses the DDPM, the positives and the runs of the seeds it has)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.seconds: dict[str, float] = {}
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") != key:
                raise ClspError(
                    f"{path.parent}: holds a demo made with another config; "
                    "choose another folder with --set run.output_dir=... or delete that one"
                )
            self.seconds = saved["seconds"]

    def run(self, stage: str, work: Callable[[], object]) -> None:
        """Run ``work`` unless ``stage`` finished before; record its wall time. A result with ``interrupted`` set
        (a training stopped by Ctrl-C, its state saved) stops the demo unrecorded: the rerun resumes it."""
        if stage in self.seconds:
            console.print(f"[dim]{stage}: done before ({self.seconds[stage]:.0f} s), skipped[/]")
            return
        console.rule(stage)
        started = time.perf_counter()
        if getattr(work(), "interrupted", False):
            raise KeyboardInterrupt
        self.seconds[stage] = time.perf_counter() - started
        atomic_write_text(self.path, json.dumps({"key": self.key, "seconds": self.seconds}, indent=1))


def run_demo(cfg: Config, seeds: Sequence[int]) -> dict[str, Any]:
    """Run every stage of the demo for ``seeds`` (see the module docstring); returns what ``demo.json`` holds."""
    from clsp.diffusion.train import train_diffusion
    from clsp.evaluation.evaluate import evaluate_run
    from clsp.evaluation.plots import read_metrics, training_curves
    from clsp.evaluation.report import comparison_rows
    from clsp.evaluation.verdict import differences, headline
    from clsp.positives.generate import generate_positives, store_path
    from clsp.positives.inspect import store_quality
    from clsp.positives.quality import quality_rows
    from clsp.positives.store import PositiveStore
    from clsp.ssl.train import train_ssl

    if cfg.data.source != "digits":
        console.print(f"[yellow]note:[/] the demo runs every stage on {cfg.data.source}; budget accordingly")
    root = cfg.run.output_dir
    config_file = save_resolved_config(cfg, root)
    key = hashlib.sha256(config_file.read_bytes()).hexdigest()[:16]
    ledger = StageLedger(root / "stages.json", key)
    resume_diffusion = (root / "diffusion" / "state").is_dir()
    if cfg.diffusion.pretrained is None:
        # The demo owns its folder: a stage not in the ledger resumes its saved state or starts over.
        ledger.run("diffusion", lambda: train_diffusion(cfg, resume_diffusion, overwrite=not resume_diffusion))
    else:
        ledger.run("diffusion", lambda: _use_pretrained(cfg))
    ledger.run("positives", lambda: generate_positives(cfg))
    store = PositiveStore.open(store_path(cfg), check="size")
    ledger.run("score positives", lambda: store_quality(store, cfg))
    quality = store_quality(store, cfg)  # cached by the stage above
    stages = ["diffusion", "positives", "score positives"]

    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for variant in variants(cfg):
            run = run_config(cfg, seed, variant)
            resume_ssl = (run.run.output_dir / "ssl" / "state").is_dir()
            stages += [f"{variant.name} seed {seed}", f"eval {variant.name} seed {seed}"]
            ledger.run(stages[-2], lambda run=run, resume=resume_ssl: train_ssl(run, resume, overwrite=not resume))
            ledger.run(stages[-1], lambda run=run: evaluate_run(run))
            runs.append(json.loads((run.run.output_dir / "eval" / "metrics.json").read_text()))

    first = {v.name: run_config(cfg, seeds[0], v).run.output_dir / "ssl" / "metrics.jsonl" for v in variants(cfg)}
    curves = training_curves({name: read_metrics(path) for name, path in first.items()}, root / "curves.png")
    headers, rows = comparison_rows(runs, group=True)
    labels = {v.name: m["method_label"] for v, m in zip(variants(cfg), runs, strict=False)}
    baseline, clsp_label, control = (labels[v.name] for v in variants(cfg))
    comparisons = {
        f"{clsp_label} vs {baseline}": differences(runs, clsp_label, baseline),
        f"{clsp_label} vs {control}": differences(runs, clsp_label, control),
    }
    verdict = [d.sentence() for diffs in comparisons.values() for d in headline(diffs)]
    diff_headers, diff_rows = _difference_rows(comparisons)
    seconds = {stage: ledger.seconds[stage] for stage in stages}
    stage_rows = _stage_rows(seconds, cfg, seeds)
    result = {
        "config": str(config_file),
        "seeds": list(seeds),
        "table": {"headers": headers, "rows": rows},
        "differences": {"headers": diff_headers, "rows": diff_rows},
        "verdict": verdict,
        "positives_quality": quality,
        "stage_seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "runs": [{"run": m["run"], "method": m["method_label"], "eval": f"{m['run']}/eval"} for m in runs],
        "encoder": result_encoder(cfg, seeds),
        "files": {
            "diffusion samples": str(root / "diffusion" / "samples.png"),
            "training curves": str(curves),
            **{
                f"report {m['method_label']} seed {seeds[0]}": f"{m['run']}/eval/report.md"
                for m in runs[: len(variants(cfg))]
            },
        },
    }
    atomic_write_text(root / RESULT_FILE, json.dumps(result, indent=1))
    quality_table = list(quality_rows(quality).items())
    atomic_write_text(root / "demo.md", _markdown(result, headers, rows, stage_rows, quality_table))
    print_table("differences: mean over seeds, spread = the larger seed std", diff_headers, diff_rows)
    print_table(f"positive quality ({store.root})", ["measure", "value"], quality_table)
    print_table(f"CLSP vs baseline, {len(seeds)} seed(s) (mean ± std over seeds)", headers, rows)
    console.rule("verdict")
    for line in verdict:
        console.print(line, highlight=False)
    print_table("wall time per stage", ["stage", "seconds"], stage_rows)
    print_table("where to look", ["what", "file"], [*result["files"].items(), ("this summary", root / "demo.md")])
    return result


def _use_pretrained(cfg: Config) -> None:
    """The diffusion stage with ``diffusion.pretrained``: no training; load (and check) it and draw its samples."""
    from clsp.diffusion.train import save_samples
    from clsp.diffusion.unet import load_trained_unet, trained_unet_source

    unet = load_trained_unet(cfg).eval()
    console.print(
        f"diffusion: sampling with the trained UNet {trained_unet_source(cfg)!r} (diffusion.pretrained), not training "
        "one; `clsp demo --train-diffusion` trains it from scratch with the config's recipe"
    )
    if cfg.diffusion.num_samples:
        save_samples(unet, cfg, cfg.run.output_dir / "diffusion" / "samples.png")


def _difference_rows(comparisons: dict[str, list[Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["comparison", "metric", "difference", "larger seed std", "outcome"]
    rows = [
        [name, d.metric, f"{d.difference:+.2f}", "-" if d.spread is None else f"{d.spread:.2f}", d.outcome]
        for name, diffs in comparisons.items()
        for d in diffs
    ]
    return headers, rows


def _stage_rows(seconds: dict[str, float], cfg: Config, seeds: Sequence[int]) -> list[list[str]]:
    """Shared stages, then each variant's SSL and eval time (mean over seeds), then the total."""
    rows = [[stage, f"{seconds[stage]:.0f}"] for stage in ("diffusion", "positives", "score positives")]
    if cfg.diffusion.pretrained is not None:
        rows[0][0] = f"diffusion (pretrained {cfg.diffusion.pretrained}: samples only)"
    for v in variants(cfg):
        for prefix, label in (("", f"train {v.name}"), ("eval ", f"eval {v.name}")):
            times = [seconds[f"{prefix}{v.name} seed {s}"] for s in seeds]
            rows.append([label + (" (mean per seed)" if len(seeds) > 1 else ""), f"{sum(times) / len(times):.0f}"])
    rows.append(["total", f"{sum(seconds.values()):.0f}"])
    return rows


def _markdown(result: dict[str, Any], headers, rows, stage_rows, quality_table) -> str:
    from clsp.evaluation.report import markdown_table

    return "\n".join(
        [
            "# clsp demo\n",
            f"Config `{result['config']}`, seeds {result['seeds']}. Accuracies in % on the test split; alignment = "
            "mean ‖f̂(x) − f̂(s)‖² between normalised backbone features of anchors and their synthetic positives "
            "(two augmented views of one image and random pairs for scale). kNN best k is picked on the test set (optimistic); fixed k is not.\n",
            markdown_table(headers, rows),
            "## Verdict\n",
            "Computed from the table: a difference counts only when it exceeds the larger of the two methods' "
            "seed standard deviations.\n",
            *(f"- {line}" for line in result["verdict"]),
            "",
            markdown_table(result["differences"]["headers"], result["differences"]["rows"]),
            "## Positive quality\n",
            "Class kept: share of candidates that a logistic regression fit on real labelled training pixels only "
            "assigns to the anchor's label (its accuracy on real test images beside it). Off-manifold: share farther "
            "from every real training image than 99% of real held-out images are (no labels needed; the real test "
            "images' rate beside it). Hardness: RMS pixel distance anchor-candidate, beside two augmented views of "
            "one image and random pairs.\n",
            markdown_table(["measure", "value"], quality_table),
            "## Wall time per stage (seconds)\n",
            markdown_table(["stage", "seconds"], stage_rows),
            "## Files\n",
            *(f"- {name}: `{path}`" for name, path in result["files"].items()),
            "",
        ]
    )


def demo(
    config: Path, overrides: Sequence[str], quick: bool, seeds: Sequence[int] | None, train_diffusion: bool = False
) -> dict[str, Any]:
    """Load ``config`` (with the ``--quick`` budget under the user's ``--set`` overrides) and run the demo;
    ``train_diffusion`` ignores ``diffusion.pretrained`` and trains the DDPM from scratch."""
    prefix = [*QUICK_OVERRIDES, "run.output_dir=runs/demo-quick"] if quick else []
    retrain = ["diffusion.pretrained=null"] if train_diffusion else []
    cfg = load_config(config, [*prefix, *overrides, *retrain])
    default = [cfg.run.seed + i for i in range(1 if quick else DEFAULT_SEEDS)]
    return run_demo(cfg, list(seeds) if seeds else default)
