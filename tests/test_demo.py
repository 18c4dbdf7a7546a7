"""``clsp demo --quick``, ``clsp eval`` and ``clsp compare`` as a user runs them: every promised file, by content."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clsp.config import load_config
from clsp.demo import StageLedger
from clsp.errors import ClspError

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHT = load_config(REPO_ROOT / "configs" / "digits.yaml").ssl.clsp_weight
CLSP_LABEL = f"CLSP-SimCLR (λ={WEIGHT:g})"
FASHION = Path("/usr/share/datasets/fashion-mnist").is_dir()
"""configs/digits.yaml transfers each row to Fashion-MNIST where Debian's dataset-fashion-mnist is installed."""
STAGES = [
    "diffusion",
    "positives",
    "score positives",
    *(
        f"{stage}{row} seed 0"
        for row in ("simclr", "clsp-simclr")  # configs/digits.yaml's demo.methods
        for stage in ("", "eval ", *(("transfer ",) if FASHION else ()))
    ),
]
CONTROL_LABEL = f"SimCLR + real 3rd view (λ={WEIGHT:g})"


def clsp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clsp.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    result = clsp("demo", "--quick", "--set", f"run.output_dir={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CLSP vs baseline" in result.stdout and "wall time per stage" in result.stdout
    return root


def png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_quick_demo_writes_every_promised_file(demo_dir: Path) -> None:
    summary = json.loads((demo_dir / "demo.json").read_text())
    assert list(summary["stage_seconds"]) == STAGES
    assert summary["encoder"] == {"run": "seed0/clsp-simclr", "variant": "clsp-simclr", "seed": 0}  # for clsp export
    assert all(s > 0 for s in summary["stage_seconds"].values())
    headers, rows = summary["table"]["headers"], summary["table"]["rows"]
    assert [row[0] for row in rows] == ["SimCLR", CLSP_LABEL]
    assert "linear 1%" in headers and "kNN 10%" in headers and ("transfer fashion_mnist" in headers) == FASHION
    assert len(summary["verdict"]) == 3 + FASHION and all(
        "one seed" in line or "more seeds" in line for line in summary["verdict"]
    )
    markdown = (demo_dir / "demo.md").read_text()
    assert "| " + " | ".join(headers) + " |" in markdown
    quality = summary["positives_quality"]
    assert quality["num_anchors"] == 1347 and quality["classifier"]["test_accuracy"] > 0.9
    assert f"| class kept | {100 * quality['class_kept']:.1f}%" in markdown
    for row in rows:
        assert "| " + " | ".join(row) + " |" in markdown

    for variant, label, weight in (("simclr", "SimCLR", 0.0), ("clsp-simclr", CLSP_LABEL, WEIGHT)):
        out = demo_dir / "seed0" / variant / "eval"
        m = json.loads((out / "metrics.json").read_text())
        assert m["method_label"] == label and m["ssl"]["clsp_weight"] == weight
        assert 10 <= m["linear"]["top1"] <= m["linear"]["top5"] <= 100  # 10 classes: above chance after training
        few = m["label_efficient"]
        assert few["1%"]["images"] == 10 and few["10%"]["images"] == 130 and few["10%"]["draws"] == 5
        assert 0 <= few["1%"]["linear_top1"] <= 100 and len(few["1%"]["knn_by_draw"]) == 5
        knn = m["knn"]
        assert knn["best_top1"] == max(knn["top1_by_k"][str(k)] for k in (5, 10, 20, 50))
        assert knn["fixed_top1"] == knn["top1_by_k"]["20"] and "optimistic" in knn["note"]
        a = m["alignment"]
        assert all(0 <= a[key] <= 4 for key in ("synthetic", "two_views", "random_pairs"))
        assert a["num_anchors"] == 1347 and a["num_candidates"] == 1
        assert m["positives_quality"] == summary["positives_quality"]
        assert (
            0 <= m["positives_quality"]["class_kept"] <= 1 and "## Positive quality" in (out / "report.md").read_text()
        )
        assert m["training"]["epoch"] == 2
        if FASHION:  # --quick fits the transfer on 500 Fashion-MNIST training images, scores all 10,000 test ones
            t = m["transfer"]["fashion_mnist"]
            assert (t["num_train"], t["num_val"], t["num_test"], t["image_size"]) == (400, 100, 10000, 16)
            assert 10 <= t["top1"] <= 100 and "## Transfer" in (out / "report.md").read_text()
        report = (out / "report.md").read_text()
        assert label in report and f"{m['linear']['top1']:.2f}" in report and f"{knn['fixed_top1']:.2f}" in report
        assert sorted(m["files"]) == ["curves", "embedding", "positives"]
        for name in m["files"]:
            assert f"![{name}]({name}.png)" in report

        embedding = png(out / "embedding.png")
        colours = {tuple(c) for c in embedding.reshape(-1, 3)[::7]}
        assert len(colours) > 20  # ten label colours with anti-aliasing, not a blank figure
        grid = png(out / "positives.png")
        # quick: k=1, so each of the 8 rows shows the anchor beside one candidate
        assert grid.shape[0] > 3 * grid.shape[1] and grid.std() > 20

    curves = png(demo_dir / "curves.png")
    assert curves.shape[1] > 600
    samples = png(demo_dir / "diffusion" / "samples.png")
    assert samples.std() > 5


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_compare_tabulates(demo_dir: Path) -> None:
    again = clsp("demo", "--quick", "--set", f"run.output_dir={demo_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") == len(STAGES)

    runs = [str(demo_dir / "seed0" / v) for v in ("simclr", "clsp-simclr")]
    table = demo_dir / "compare.md"
    result = clsp("compare", *runs, "--markdown", str(table))
    assert result.returncode == 0, result.stderr
    lines = table.read_text().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| SimCLR |") and lines[3].startswith(f"| {CLSP_LABEL} |")
    assert "linear 10%" in lines[0]

    two = clsp("demo", "--quick", "--seeds", "0,1", "--set", f"run.output_dir={demo_dir}")
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("skipped") == len(STAGES)  # seed 0 and the shared stages are reused: seed 1 only trains
    assert all((demo_dir / "seed1" / v / "eval" / "metrics.json").is_file() for v in ("simclr", "clsp-simclr"))
    summary = json.loads((demo_dir / "demo.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["verdict"]) == 3 + FASHION
    assert all("95% CI" in line and "over 2 paired seeds" in line for line in summary["verdict"])
    assert {row[0] for row in summary["differences"]["rows"]} == {f"{CLSP_LABEL} vs SimCLR"}
    top1 = json.loads((demo_dir / "seed0" / "clsp-simclr" / "eval" / "metrics.json").read_text())["linear"]["top1"]
    assert f"{top1:.2f}" in lines[3]

    by_method = demo_dir / "by_method.md"
    runs = [str(demo_dir / f"seed{seed}" / v) for seed in (0, 1) for v in ("simclr", "clsp-simclr")]
    result = clsp("compare", *runs, "--by-method", "--markdown", str(by_method))
    assert result.returncode == 0, result.stderr
    lines = by_method.read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| method | runs | linear top-1 |")
    assert lines[2].startswith("| SimCLR | 2 | ") and lines[3].startswith(f"| {CLSP_LABEL} | 2 | ")
    tops = [
        json.loads((demo_dir / f"seed{seed}" / "clsp-simclr" / "eval" / "metrics.json").read_text())["linear"]["top1"]
        for seed in (0, 1)
    ]
    assert f"| {statistics.fmean(tops):.2f} ± {statistics.stdev(tops):.2f} |" in lines[3]

    other = clsp("demo", "--quick", "--set", "ssl.temperature=0.5", "--set", f"run.output_dir={demo_dir}")
    assert other.returncode == 2 and "--overwrite" in other.stderr
    assert "run with other settings (ssl.temperature: 0.2 -> 0.5)" in other.stderr  # names what changed

    # More rows: NNCLR and MoCo v2+ with its CLSP variant join; every earlier stage is reused.
    rows = "simclr,clsp-simclr,simclr-real3,nnclr,moco,clsp-moco"
    more = clsp("demo", "--quick", "--methods", rows, "--set", f"run.output_dir={demo_dir}")
    assert more.returncode == 0, more.stderr[-2000:]
    assert more.stdout.count("skipped") == len(STAGES)
    summary = json.loads((demo_dir / "demo.json").read_text())
    assert summary["methods"] == rows.split(",")
    moco_label = CLSP_LABEL.replace("SimCLR", "MoCo v2+")
    assert [row[0] for row in summary["table"]["rows"]] == [
        "SimCLR", CLSP_LABEL, CONTROL_LABEL, "NNCLR", "MoCo v2+", moco_label
    ]  # fmt: skip
    compared = {row[0] for row in summary["differences"]["rows"]}
    assert {f"{CLSP_LABEL} vs {CONTROL_LABEL}", f"{CLSP_LABEL} vs NNCLR", f"{moco_label} vs MoCo v2+"} <= compared
    assert f"{moco_label} vs NNCLR" in compared
    assert f"{CLSP_LABEL} vs {moco_label}" not in compared  # CLSP rows are compared with the others, not each other
    nnclr = json.loads((demo_dir / "seed0" / "nnclr" / "eval" / "metrics.json").read_text())
    assert nnclr["ssl"]["method"] == "nnclr" and nnclr["ssl"]["clsp_weight"] == 0 and nnclr["seed"] == 0
    control = json.loads((demo_dir / "seed0" / "simclr-real3" / "eval" / "metrics.json").read_text())
    assert control["method_label"] == CONTROL_LABEL and control["ssl"]["clsp_weight"] == WEIGHT
    assert control["ssl"]["positive"] == "real" and control["training"]["clsp"] > 0  # a third real view, not the store
    bad = clsp("demo", "--quick", "--methods", "simclr,byol", "--set", f"run.output_dir={demo_dir}")
    assert bad.returncode == 2 and "demo.methods" in bad.stderr and "clsp-nnclr" in bad.stderr


def test_eval_without_a_trained_backbone_is_one_clear_line(tmp_path: Path) -> None:
    result = clsp("eval", "configs/digits.yaml", "--set", f"run.output_dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no backbone.safetensors; train first" in result.stderr


def test_compare_names_a_missing_or_broken_metrics_file(tmp_path: Path) -> None:
    result = clsp("compare", str(tmp_path))
    assert result.returncode == 2 and "run `clsp eval CONFIG`" in result.stderr
    broken = tmp_path / "metrics.json"
    broken.write_text("{")
    result = clsp("compare", str(broken))
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_a_stage_recorded_before_a_new_none_valued_field_is_still_done(tmp_path: Path) -> None:
    ledger, calls = tmp_path / "stages.json", []
    StageLedger(ledger).run("stage", {"data": {"root": None}}, calls.append)
    StageLedger(ledger).run("stage", {"data": {"root": None, "roots": None}}, calls.append)  # a newer clsp's field
    assert calls == [False] and not StageLedger(ledger).changed("stage", {"data": {"root": None, "roots": None}})
    assert StageLedger(ledger).changed("stage", {"data": {"root": None, "roots": {"train": "a"}}})
    with pytest.raises(ClspError, match=r"data.roots: null -> \{"):
        StageLedger(ledger).run("stage", {"data": {"root": None, "roots": {"train": "a"}}}, calls.append)


def test_a_folder_of_another_demo_suggests_an_option_that_exists(tmp_path: Path) -> None:
    ledger = tmp_path / "stages.json"
    calls = []
    StageLedger(ledger).run("stage", {"ssl": {"lr": 0.1}}, calls.append)
    StageLedger(ledger).run("stage", {"ssl": {"lr": 0.1}}, calls.append)  # finished with these settings: skipped
    assert calls == [False]
    with pytest.raises(ClspError) as caught:
        StageLedger(ledger).run("stage", {"ssl": {"lr": 0.2}}, calls.append)
    assert "--set run.output_dir=" in str(caught.value) and "--overwrite" in str(caught.value)
    assert "(ssl.lr: 0.1 -> 0.2)" in str(caught.value)  # names what changed
    assert "--set" in clsp("demo", "--help").stdout and "--overwrite" in clsp("demo", "--help").stdout
    StageLedger(ledger, overwrite=True).run("stage", {"ssl": {"lr": 0.2}}, calls.append)  # other settings: run afresh
    assert calls == [False, False] and StageLedger(ledger).seconds.keys() == {"stage"}

    def interrupted(resume: bool) -> object:
        calls.append(resume)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StageLedger(ledger).run("other", {"eval": 1}, interrupted)
    StageLedger(ledger).run("other", {"eval": 1}, calls.append)  # started with these settings: resumed
    assert calls == [False, False, False, True]
    ledger.write_text('{"key": "abc", "seconds": {}}')  # an older clsp's ledger
    with pytest.raises(ClspError, match="older clsp"):
        StageLedger(ledger)
    for corrupt, match in (
        ("{", "not valid JSON"),
        ('{"stages": [1]}', "'stages' is"),
        ('{"stages": {"a": 3}}', "no key"),
    ):
        ledger.write_text(corrupt)
        with pytest.raises(ClspError, match=match):
            StageLedger(ledger)


def test_a_copied_demo_folder_keeps_its_stages(tmp_path: Path) -> None:
    from clsp.demo import SSL_SETTINGS, stage_key, stage_settings

    cfg = load_config(REPO_ROOT / "configs" / "digits.yaml", [f"run.output_dir={tmp_path / 'a' / 'seed0'}"])
    copy = load_config(REPO_ROOT / "configs" / "digits.yaml", [f"run.output_dir={tmp_path / 'b' / 'seed0'}"])
    a, b = stage_settings(cfg, SSL_SETTINGS, tmp_path / "a"), stage_settings(copy, SSL_SETTINGS, tmp_path / "b")
    assert a["run"]["output_dir"] == "<demo>/seed0" and stage_key(a) == stage_key(b)


def test_a_retrained_pretrained_unet_redoes_the_stages_that_sampled_with_it(tmp_path: Path) -> None:
    import torch

    from clsp.demo import POSITIVES_SETTINGS, SSL_SETTINGS, stage_settings
    from clsp.diffusion.unet import build_unet

    folder = tmp_path / "unet"
    torch.manual_seed(0)
    build_unet("tiny", 16, 1).save_pretrained(folder)
    cfg = load_config(REPO_ROOT / "configs" / "digits.yaml", [f"diffusion.pretrained={folder}"])
    ledger, calls = tmp_path / "stages.json", []
    StageLedger(ledger).run("positives", stage_settings(cfg, POSITIVES_SETTINGS, tmp_path), calls.append)
    ssl_only = stage_settings(cfg, SSL_SETTINGS, tmp_path)
    (folder / "notes.txt").write_text("not part of the model")
    StageLedger(ledger).run("positives", stage_settings(cfg, POSITIVES_SETTINGS, tmp_path), calls.append)
    assert calls == [False]  # the same weights: skipped

    torch.manual_seed(1)
    build_unet("tiny", 16, 1).save_pretrained(folder)  # retrained in place: same name, other weights
    with pytest.raises(ClspError, match=r'diffusion.pretrained_sha256: "[0-9a-f]+\.\.\. -> "[0-9a-f]+'):
        StageLedger(ledger).run("positives", stage_settings(cfg, POSITIVES_SETTINGS, tmp_path), calls.append)
    assert stage_settings(cfg, SSL_SETTINGS, tmp_path) == ssl_only  # a baseline row does not depend on the UNet

    shipped = load_config(REPO_ROOT / "configs" / "digits.yaml")
    from clsp.diffusion.unet import SHIPPED_DIR, unet_files_sha256

    assert stage_settings(shipped, POSITIVES_SETTINGS, tmp_path)["diffusion.pretrained_sha256"] == unet_files_sha256(
        SHIPPED_DIR / "digits-pretrained"
    )
