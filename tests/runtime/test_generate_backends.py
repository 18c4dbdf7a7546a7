"""``generate_positives`` with an exported denoiser runs the same sampler loop and makes the same positives."""

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clsp.cli import app
from clsp.errors import ClspError
from clsp.positives.generate import generate_positives
from clsp.positives.store import PositiveStore
from clsp.runtime.load import load_denoiser


def positives(cfg) -> np.ndarray:
    """uint8 ``[N, k, H, W, C]`` of the finished store."""
    result = generate_positives(cfg, limit=8, backend=load_denoiser)
    assert result.complete
    store = PositiveStore.open(result.store)
    return np.stack([[store.candidate(i, j) for j in range(store.num_candidates)] for i in range(store.n)])


@pytest.mark.parametrize("backend", ["ort", "torchscript"])
def test_exported_backends_make_the_torch_positives_within_one_level(
    exported_run: Path, tmp_path: Path, config_of, backend: str
) -> None:
    reference = positives(config_of(exported_run, f"ssl.positives={tmp_path / 'torch'}"))
    exported = positives(config_of(exported_run, f"ssl.positives={tmp_path / backend}", f"positives.backend={backend}"))
    assert reference.shape == exported.shape == (8, 2, 16, 16, 1)
    difference = np.abs(reference.astype(int) - exported.astype(int))
    # float32 eps agree to ~1e-6; uint8 truncation turns the rare value on a level boundary into one level
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99


def test_a_backend_without_its_export_is_refused(fresh_run: Path, config_of) -> None:
    with pytest.raises(ClspError, match=r"positives.backend=pt2 needs it: run `clsp export CONFIG --pt2 --resume`"):
        generate_positives(config_of(fresh_run, "positives.backend=pt2"), limit=4, backend=load_denoiser)


def test_generate_command_backend_option_picks_the_export(
    exported_run: Path, tmp_path: Path, command, config_of
) -> None:
    store = tmp_path / "ort"
    refused = command("positives generate", exported_run, "--set", f"ssl.positives={store}", "--backend", "pt2")
    assert isinstance(refused.exception, ClspError), refused.output  # the option is what asked for pt2
    assert "positives.backend=pt2 needs it" in str(refused.exception)
    sets = ["--set", f"ssl.positives={store}", "--set", "positives.backend=pt2"]  # the option overrides the config
    result = command("positives generate", exported_run, *sets, "--backend", "ort", "--limit", 8)
    assert result.exit_code == 0, result.output
    reference = positives(config_of(exported_run, f"ssl.positives={tmp_path / 'torch'}"))
    exported = PositiveStore.open(store)
    assert exported.is_complete and exported.n == 8
    difference = np.abs(reference.astype(int) - np.stack([exported[i] for i in range(8)]).astype(int))
    assert difference.max() <= 1


@pytest.mark.slow
def test_compiled_torch_denoiser_makes_the_eager_positives_within_one_level(
    fresh_run: Path, tmp_path: Path, config_of
) -> None:
    reference = positives(config_of(fresh_run, f"ssl.positives={tmp_path / 'eager'}"))
    compiled = positives(config_of(fresh_run, f"ssl.positives={tmp_path / 'compiled'}", "positives.compile=true"))
    difference = np.abs(reference.astype(int) - compiled.astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99


def test_compile_is_refused_for_exported_backends(fresh_run: Path, config_of) -> None:
    with pytest.raises(ClspError, match="compile applies to the torch backend only"):
        config_of(fresh_run, "positives.backend=ort", "positives.compile=true")


def test_a_store_records_its_backend_and_real_precision_and_never_mixes_them(
    exported_run: Path, tmp_path: Path, config_of
) -> None:
    store = tmp_path / "store"
    ort_bf16 = config_of(exported_run, f"ssl.positives={store}", "positives.backend=ort", "positives.precision=bf16")
    assert generate_positives(ort_bf16, limit=4, backend=load_denoiser).complete
    provenance = PositiveStore.open(store).provenance
    assert provenance["backend"] == "ort" and provenance["sampler"]["precision"] == "fp32"  # ONNX runs fp32
    ort_fp32 = config_of(exported_run, f"ssl.positives={store}", "positives.backend=ort", "positives.precision=fp32")
    resumed = generate_positives(ort_fp32, limit=4, backend=load_denoiser, resume=True)
    assert resumed.generated == 0  # the same positives: resumed, nothing to do
    with pytest.raises(ClspError) as refused:  # torch under bf16 autocast makes other positives
        generate_positives(
            config_of(exported_run, f"ssl.positives={store}", "positives.precision=bf16"),
            limit=4,
            backend=load_denoiser,
            resume=True,
        )
    message = str(refused.value)
    assert '(provenance.backend: "ort" -> "torch"; provenance.sampler.precision: "fp32" -> "bf16")' in message
    assert "\n" not in message
    verified = CliRunner().invoke(app, ["positives", "verify", str(store)], env={"COLUMNS": "240"})
    assert verified.exit_code == 0, verified.output
    assert re.search(r"denoiser backend\s*│ ort ", verified.output)
    assert re.search(r"precision\s*│ fp32 ", verified.output)
