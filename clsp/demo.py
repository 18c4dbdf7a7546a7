"""``clsp demo``: every stage on one config (by default the embedded digits), CLSP against baselines and the
paper's control, with a verdict computed from the numbers.

Trains the DDPM (or, with ``diffusion.pretrained``, samples with a trained one), generates and scores the positives,
then for each seed (3 by default) trains every row of ``demo.methods`` (``--methods``; see
:data:`~clsp.config.DEMO_METHODS`: baselines with λ = 0, CLSP variants with λ = ``ssl.clsp_weight``, controls with
the same λ on a third real augmented view) with the same budget and seed, evaluates them (full-label and
label-efficient probes), and writes side-by-side tables, every CLSP row's paired differences against every row
without CLSP with a 95 % confidence interval over seeds (:mod:`clsp.evaluation.verdict`), and a verdict sentence per
headline probe.

Layout under ``<run.output_dir>``: ``unet/``, ``diffusion/``, ``positives/`` (shared), ``seed<S>/<variant>/``
(``ssl/`` and ``eval/`` of each run), ``curves.png``, ``demo.md``, ``demo.json`` and ``stages.json``, the ledger
of finished stages with their wall time: a rerun skips finished stages and resumes an interrupted one.
``demo.json``'s ``encoder`` names the run whose encoder is the demo's result (the CLSP variant of the first seed):
the one ``clsp export`` and ``clsp features`` use for the demo's folder.
"""

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clsp.atomic import atomic_write_text
from clsp.config import UNRECORDED_DATA_FIELDS, Config, TransferTarget, load_config, save_resolved_config
from clsp.differences import describe_differences, field_differences
from clsp.errors import ClspError
from clsp.interrupt import interrupted_error
from clsp.json_files import json_field, read_json_object
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
QUICK_TRANSFER_TRAIN = 500
"""``--quick``: transfer targets fit on at most this many training images."""
DEFAULT_SEEDS = 3
"""Seeds every variant is trained with unless ``--seed`` says otherwise: a verdict needs a seed spread."""


@dataclass(frozen=True)
class Variant:
    name: str
    """A row of :data:`~clsp.config.DEMO_METHODS`, also its folder name under ``seed<S>/``."""
    method: str
    clsp_weight: float
    positive: str = "synthetic"

    @property
    def is_clsp(self) -> bool:
        return self.clsp_weight > 0 and self.positive == "synthetic"


def variant(name: str, weight: float) -> Variant:
    """The row ``name``: ``clsp-<method>`` (λ = ``weight`` on a synthetic positive), ``<method>-real3`` (the paper's
    control: the same λ on a third *real* augmented view, the paper's control) or ``<method>`` (the baseline, λ = 0)."""
    if name.startswith("clsp-"):
        return Variant(name, name.removeprefix("clsp-"), weight)
    if name.endswith("-real3"):
        return Variant(name, name.removesuffix("-real3"), weight, positive="real")
    return Variant(name, name, 0.0)


def variants(cfg: Config) -> tuple[Variant, ...]:
    """The rows of ``cfg.demo.methods``; λ is ``ssl.clsp_weight`` (1.0 when it is 0)."""
    return tuple(variant(name, cfg.ssl.clsp_weight or 1.0) for name in cfg.demo.methods)


def run_config(cfg: Config, seed: int, variant: Variant) -> Config:
    """The config of one SSL run: its own folder, seed and method, the shared positive store."""
    run = cfg.model_copy(deep=True)
    run.ssl.positives = cfg.positives_store
    run.ssl.method = variant.method
    run.ssl.clsp_weight = variant.clsp_weight
    run.ssl.positive = variant.positive
    run.run.seed = seed
    run.run.output_dir = cfg.run.output_dir / f"seed{seed}" / variant.name
    return run


def result_encoder(cfg: Config, seeds: Sequence[int]) -> dict[str, Any]:
    """The encoder that stands for the demo's result: the first CLSP row's (else the first row's) of the first seed,
    its run folder relative to ``run.output_dir`` (``{"run": "seed0/clsp-simclr", "variant": "clsp-simclr",
    "seed": 0}``)."""
    rows = variants(cfg)
    variant = next((v for v in rows if v.is_clsp), rows[0])
    run = run_config(cfg, seeds[0], variant).run.output_dir
    return {"run": run.relative_to(cfg.run.output_dir).as_posix(), "variant": variant.name, "seed": seeds[0]}


def stage_settings(cfg: Config, parts: Sequence[str], root: Path) -> dict[str, Any]:
    """The settings ``parts`` (sections or dotted fields of ``cfg``) that decide a stage's result, with paths inside
    the demo folder ``root`` written as ``<demo>/...``: a copied demo folder (only ``output_dir`` differs) keeps
    every finished stage. With ``diffusion.pretrained``, a ``diffusion`` part adds the SHA-256 of the UNet's files."""
    prefix = str(root)

    def relative(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relative(v) for v in value]
        if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
            return "<demo>" + value[len(prefix) :]
        return value

    dump = cfg.model_dump(mode="json")
    for name in UNRECORDED_DATA_FIELDS:
        del dump["data"][name]
    if "eval.transfer" not in parts:  # the transfer stage's own setting: adding a target redoes no evaluation
        del dump["eval"]["transfer"]
    chosen = {}
    for part in parts:
        value = dump
        for name in part.split("."):
            value = value[name]
        chosen[part] = relative(value)
    if "diffusion" in parts and cfg.diffusion.pretrained is not None:
        from clsp.diffusion.unet import trained_unet_source, unet_files_sha256

        # the name or folder alone does not say which weights: a retrained UNet there redoes what sampled with it
        chosen["diffusion.pretrained_sha256"] = unet_files_sha256(trained_unet_source(cfg))
    return chosen


def stage_key(settings: dict[str, Any]) -> str:
    """A short hash of :func:`stage_settings`."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class StageLedger:
    """``stages.json``: for every stage the key of the settings it depends on (:func:`stage_key`) and, once it
    finished, its wall time. A rerun skips finished stages whose settings are unchanged and resumes an interrupted
    one; a stage whose settings changed is refused unless ``overwrite``, which runs it (only it) again. So a rerun
    with more seeds or rows, or other positives, reuses every stage that does not depend on what changed."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path, self.overwrite = path, overwrite
        self.stages: dict[str, dict[str, Any]] = {}
        if path.is_file():
            fix = "delete it to rerun every stage, or choose another folder with --set run.output_dir=..."
            saved = read_json_object(path, fix)
            if "stages" not in saved:
                raise ClspError(
                    f"{path}: written by an older clsp; choose another folder with --set run.output_dir=... or "
                    "delete that one"
                )
            stages = json_field(saved, "stages", dict, path, fix)
            for name, entry in stages.items():
                if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                    raise ClspError(f"{path}: stage {name!r} has no key; {fix}")
                if "seconds" in entry:
                    json_field(entry, "seconds", float, path, fix, minimum=0)
            self.stages = stages

    @property
    def seconds(self) -> dict[str, float]:
        return {name: entry["seconds"] for name, entry in self.stages.items() if "seconds" in entry}

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps({"stages": self.stages}, indent=1))

    def changed(self, stage: str, settings: dict[str, Any]) -> bool:
        """Whether ``stage`` was started before with other settings (a field only one side has reads None)."""
        entry = self.stages.get(stage)
        if entry is None:
            return False
        if "settings" in entry:
            return bool(field_differences(entry["settings"], settings, ""))
        return entry["key"] != stage_key(settings)

    def run(self, stage: str, settings: dict[str, Any], work: Callable[[bool], object]) -> None:
        """Run ``work(resume)`` unless ``stage`` finished before with ``settings`` (:func:`stage_settings`);
        ``resume`` is True when it started with them and did not finish. Records the wall time. A result with
        ``interrupted`` set (a training stopped by Ctrl-C or SIGTERM, its state saved) stops the demo unrecorded:
        the rerun resumes it."""
        key, entry = stage_key(settings), self.stages.get(stage)
        if entry is not None and "settings" in entry and not field_differences(entry["settings"], settings, ""):
            entry["key"] = key  # the same settings, recorded by a clsp with fewer (None-valued) fields
        if entry is not None and entry["key"] == key and "seconds" in entry:
            console.print(f"[dim]{stage}: done before ({entry['seconds']:.0f} s), skipped[/]")
            return
        if entry is not None and entry["key"] != key and not self.overwrite:
            changed = field_differences(entry.get("settings"), settings, "")
            named = describe_differences([(name.lstrip("."), old, new) for name, old, new in changed])
            raise ClspError(
                f"{self.path.parent}: stage '{stage}' was run with other settings ({named or 'settings recorded by an earlier clsp'}); rerun "
                "with --overwrite to redo the stages whose settings changed, or choose another folder with "
                "--set run.output_dir=..."
            )
        resume = entry is not None and entry["key"] == key
        self.stages[stage] = {"key": key, "settings": settings}
        self._save()
        console.rule(stage)
        started = time.perf_counter()
        if getattr(work(resume), "interrupted", False):
            raise interrupted_error()
        self.stages[stage] = {"key": key, "settings": settings, "seconds": time.perf_counter() - started}
        self._save()


DIFFUSION_SETTINGS = ("data", "diffusion", "run.seed")
POSITIVES_SETTINGS = (*DIFFUSION_SETTINGS, "positives")
SCORE_SETTINGS = (*POSITIVES_SETTINGS, "ssl.augment")
SSL_SETTINGS = ("run", "data", "ssl")
"""What each demo stage depends on; an SSL run with synthetic positives (and its evaluation) also on
POSITIVES_SETTINGS, every evaluation on ``eval``. A row without CLSP is not evaluated again when only the positives
change: its probes do not depend on them, and its alignment columns are measured against the store that existed when
it was evaluated (none when its rows ran first, as in a demo of baselines only)."""


def run_demo(cfg: Config, seeds: Sequence[int], overwrite: bool = False) -> dict[str, Any]:
    """Run every stage of the demo for ``seeds`` (see the module docstring); returns what ``demo.json`` holds.
    ``overwrite`` redoes the stages whose settings changed since they ran in this folder (see :class:`StageLedger`)."""
    from clsp.contrastive.train import train_ssl
    from clsp.diffusion.train import train_diffusion
    from clsp.evaluation.evaluate import evaluate_run
    from clsp.evaluation.plots import read_metrics, training_curves
    from clsp.evaluation.report import comparison_rows
    from clsp.evaluation.transfer import transfer_run
    from clsp.evaluation.verdict import differences, headline
    from clsp.positives.generate import generate_positives
    from clsp.positives.inspect import store_quality
    from clsp.positives.quality import quality_rows
    from clsp.positives.store import PositiveStore
    from clsp.runtime.load import load_denoiser

    if cfg.data.source != "digits":
        console.print(f"[yellow]note:[/] the demo runs every stage on {cfg.data.source}; budget accordingly")
    root = cfg.run.output_dir
    config_file = save_resolved_config(cfg, root)
    ledger = StageLedger(root / "stages.json", overwrite)
    rows = variants(cfg)
    stages, quality, store = [], None, None
    if any(v.is_clsp for v in rows):  # baselines and controls alone need no DDPM and no positives
        if cfg.diffusion.pretrained is None:
            # The demo owns its folder: a stage resumes its saved state or starts over.
            def diffusion(resume: bool) -> object:
                resume = resume and (cfg.layout.diffusion / "state").is_dir()
                return train_diffusion(cfg, resume, overwrite=not resume)

            ledger.run("diffusion", stage_settings(cfg, DIFFUSION_SETTINGS, root), diffusion)
        else:
            ledger.run("diffusion", stage_settings(cfg, DIFFUSION_SETTINGS, root), lambda resume: _use_pretrained(cfg))

        settings = stage_settings(cfg, POSITIVES_SETTINGS, root)
        if overwrite and ledger.changed("positives", settings):
            shutil.rmtree(cfg.positives_store, ignore_errors=True)  # made with other settings: start it over
        ledger.run(
            "positives", settings, lambda resume: generate_positives(cfg, backend=load_denoiser, resume=True)
        )  # resumes a store of these settings
        store = PositiveStore.open(cfg.positives_store, check="size")
        ledger.run(
            "score positives", stage_settings(cfg, SCORE_SETTINGS, root), lambda resume: store_quality(store, cfg)
        )
        quality = store_quality(store, cfg)  # cached by the stage above
        stages = ["diffusion", "positives", "score positives"]

    runs: list[dict[str, Any]] = []
    targets = available_targets(cfg)
    for seed in seeds:
        for variant in rows:
            run = run_config(cfg, seed, variant)
            ssl_settings = stage_settings(run, (*SSL_SETTINGS, *(POSITIVES_SETTINGS if variant.is_clsp else ())), root)
            stages += [f"{variant.name} seed {seed}", f"eval {variant.name} seed {seed}"]

            def ssl(resume: bool, run: Config = run) -> object:
                resume = resume and (run.layout.ssl / "state").is_dir()
                return train_ssl(run, resume, overwrite=not resume)

            ledger.run(stages[-2], ssl_settings, ssl)
            eval_settings = stage_settings(
                run, (*SSL_SETTINGS, *(POSITIVES_SETTINGS if variant.is_clsp else ()), "eval"), root
            )
            ledger.run(
                stages[-1],
                eval_settings,
                lambda resume, run=run: evaluate_run(run, resume=resume, overwrite=not resume),
            )
            if targets:
                stages.append(f"transfer {variant.name} seed {seed}")
                transfer_settings = {
                    **stage_settings(run, (*SSL_SETTINGS, *(POSITIVES_SETTINGS if variant.is_clsp else ())), root),
                    "eval.transfer": [t.model_dump(mode="json") for t in targets],
                    "eval.knn_temperature": run.eval.knn_temperature,
                }
                ledger.run(
                    stages[-1],
                    transfer_settings,
                    lambda resume, run=run: transfer_run(run, targets, resume=resume, overwrite=not resume),
                )
            runs.append(json.loads((run.layout.eval / "metrics.json").read_text()))

    first = {v.name: run_config(cfg, seeds[0], v).layout.ssl / "metrics.jsonl" for v in rows}
    curves = training_curves({name: read_metrics(path) for name, path in first.items()}, root / "curves.png")
    headers, table_rows = comparison_rows(runs, group=True)
    labels = {v: m["method_label"] for v, m in zip(rows, runs, strict=False)}
    comparisons = {
        f"{labels[a]} vs {labels[b]}": differences(runs, labels[a], labels[b])
        for a in rows
        if a.is_clsp
        for b in rows
        if not b.is_clsp
    }
    verdict = [d.sentence() for diffs in comparisons.values() for d in headline(diffs)]
    diff_headers, diff_rows = _difference_rows(comparisons)
    seconds = {stage: ledger.seconds[stage] for stage in stages}
    stage_rows = _stage_rows(seconds, cfg, rows, seeds)
    result = {
        "config": str(config_file),
        "seeds": list(seeds),
        "methods": [v.name for v in rows],
        "table": {"headers": headers, "rows": table_rows},
        "differences": {"headers": diff_headers, "rows": diff_rows},
        "verdict": verdict,
        "positives_quality": quality,
        "stage_seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "runs": [{"run": m["run"], "method": m["method_label"], "eval": f"{m['run']}/eval"} for m in runs],
        "encoder": result_encoder(cfg, seeds),
        "files": {
            **({"diffusion samples": str(cfg.layout.diffusion / "samples.png")} if store is not None else {}),
            "training curves": str(curves),
            **{f"report {m['method_label']} seed {seeds[0]}": f"{m['run']}/eval/report.md" for m in runs[: len(rows)]},
        },
    }
    atomic_write_text(cfg.layout.demo_result, json.dumps(result, indent=1))
    quality_table = list(quality_rows(quality).items()) if quality else []
    atomic_write_text(root / "demo.md", _markdown(result, headers, table_rows, stage_rows, quality_table))
    print_table("paired differences over seeds (a − b), 95% t-interval", diff_headers, diff_rows)
    if store is not None:
        print_table(f"positive quality ({store.root})", ["measure", "value"], quality_table)
    print_table(f"CLSP vs baselines, {len(seeds)} seed(s) (mean ± std over seeds)", headers, table_rows)
    console.rule("verdict")
    for line in verdict:
        console.print(line, markup=False, highlight=False)
    print_table("wall time per stage", ["stage", "seconds"], stage_rows)
    print_table("where to look", ["what", "file"], [*result["files"].items(), ("this summary", root / "demo.md")])
    return result


def available_targets(cfg: Config) -> tuple[TransferTarget, ...]:
    """The ``eval.transfer`` targets whose files are here (a missing one is skipped with a note: the digits demo
    transfers to Fashion-MNIST only where Debian's dataset-fashion-mnist is installed)."""
    from clsp.data import load_images

    found = []
    for target in cfg.eval.transfer:
        try:
            load_images(target.data, target.data.test_split)
        except ClspError as e:
            console.print(f"[yellow]note:[/] no transfer to {target.label} ({str(e).split(';')[0]})")
            continue
        found.append(target)
    return tuple(found)


def _use_pretrained(cfg: Config) -> None:
    """The diffusion stage with ``diffusion.pretrained``: no training; load (and check) it and draw its samples."""
    from clsp.diffusion.train import save_samples
    from clsp.diffusion.unet import load_trained_unet, trained_unet_source

    unet = load_trained_unet(cfg).eval()
    console.print(
        f"diffusion: sampling with the trained UNet {trained_unet_source(cfg)!r} (diffusion.pretrained), not training "
        "one; `clsp demo --train-diffusion` trains it from scratch with the config's recipe",
        markup=False,
    )
    if cfg.diffusion.num_samples:
        save_samples(unet, cfg, cfg.layout.diffusion / "samples.png")


def _difference_rows(comparisons: dict[str, list[Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["comparison", "metric", "mean difference", "95% CI", "seeds", "outcome"]
    rows = [
        [name, d.metric, f"{d.difference:+.2f}", d.interval_text(), str(len(d.seeds)), d.outcome]
        for name, diffs in comparisons.items()
        for d in diffs
    ]
    return headers, rows


def _stage_rows(
    seconds: dict[str, float], cfg: Config, rows: Sequence[Variant], seeds: Sequence[int]
) -> list[list[str]]:
    """Shared stages, then each row's SSL and eval time (mean over seeds), then the total."""
    shared = [s for s in ("diffusion", "positives", "score positives") if s in seconds]
    table = [[stage, f"{seconds[stage]:.0f}"] for stage in shared]
    if shared and cfg.diffusion.pretrained is not None:
        table[0][0] = f"diffusion (pretrained {cfg.diffusion.pretrained}: samples only)"
    for v in rows:
        for prefix, label in (
            ("", f"train {v.name}"),
            ("eval ", f"eval {v.name}"),
            ("transfer ", f"transfer {v.name}"),
        ):
            if f"{prefix}{v.name} seed {seeds[0]}" not in seconds:
                continue  # no transfer target
            times = [seconds[f"{prefix}{v.name} seed {s}"] for s in seeds]
            table.append([label + (" (mean per seed)" if len(seeds) > 1 else ""), f"{sum(times) / len(times):.0f}"])
    table.append(["total", f"{sum(seconds.values()):.0f}"])
    return table


def _quality_markdown(quality_table: list[tuple[str, str]]) -> list[str]:
    from clsp.evaluation.report import markdown_table

    if not quality_table:
        return []
    return [
        "## Positive quality\n",
        "Class kept: share of candidates that the reference classifier, fit on real labelled training images only, "
        "assigns to the anchor's label (its accuracy on real test images beside it). Off-manifold: share farther "
        "from every real training image than 99% of real held-out images are (no labels needed; the real test "
        "images' rate beside it). Hardness: RMS pixel distance anchor-candidate, beside two augmented views of "
        "one image and random pairs.\n",
        markdown_table(["measure", "value"], quality_table),
    ]


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
            "Computed from the runs: for each comparison, the per-seed differences (same seed: same data order, "
            "augmentations and label draws) and their 95% Student-t interval; a method is ahead or behind only when "
            "the interval excludes 0.\n",
            *(f"- {line}" for line in result["verdict"]),
            "",
            markdown_table(result["differences"]["headers"], result["differences"]["rows"]),
            *_quality_markdown(quality_table),
            "## Wall time per stage (seconds)\n",
            markdown_table(["stage", "seconds"], stage_rows),
            "## Files\n",
            *(f"- {name}: `{path}`" for name, path in result["files"].items()),
            "",
        ]
    )


def demo(
    config: Path,
    overrides: Sequence[str],
    quick: bool,
    seeds: Sequence[int] | None,
    train_diffusion: bool = False,
    methods: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Load ``config`` (with the ``--quick`` budget under the user's ``--set`` overrides) and run the demo;
    ``train_diffusion`` ignores ``diffusion.pretrained`` and trains the DDPM from scratch; ``methods`` replaces
    ``demo.methods``."""
    prefix = [*QUICK_OVERRIDES, "run.output_dir=runs/demo-quick"] if quick else []
    retrain = ["diffusion.pretrained=null"] if train_diffusion else []
    rows = [f"demo.methods=[{', '.join(methods)}]"] if methods else []
    cfg = load_config(config, [*prefix, *overrides, *retrain, *rows])
    if quick:
        cap = QUICK_TRANSFER_TRAIN
        cfg.eval.transfer = tuple(
            t.model_copy(update={"max_train": min(t.max_train or cap, cap)}) for t in cfg.eval.transfer
        )
    default = [cfg.run.seed + i for i in range(1 if quick else DEFAULT_SEEDS)]
    return run_demo(cfg, list(seeds) if seeds else default, overwrite)
