"""``.pt2``: torch.export with a dynamic batch, compiled by AOTInductor (tens of seconds, so one slow test)."""

import json
from pathlib import Path

import pytest
import torch

from clsp.diffusion.sampler import SamplerSettings
from clsp.export.artifacts import METADATA_FILE, artifact_dir, pt2_device
from clsp.export.specs import denoiser_spec, run_denoiser
from clsp.runtime.load import load_denoiser


@pytest.mark.slow
def test_pt2_denoiser_exports_loads_and_matches_torch_at_any_batch(fresh_run: Path, config_of, command) -> None:
    for path in (fresh_run / "ssl").iterdir():  # the denoiser only: each compile takes tens of seconds
        path.unlink()
    result = command("export", fresh_run, "--pt2")  # `clsp export CONFIG --pt2`
    assert result.exit_code == 0, result.output
    assert "denoiser pt2" in result.output and "built in" in result.output
    assert sorted(p.name for p in (fresh_run / "export").iterdir()) == ["config.yaml", "pt2"]
    metadata = json.loads((artifact_dir(fresh_run, "pt2", "denoiser") / METADATA_FILE).read_text())
    assert metadata["parity"][0]["max_rel"] <= 1e-4
    assert metadata["settings"] == {"device": pt2_device()}
    cfg = config_of(fresh_run, "positives.backend=pt2")
    module = run_denoiser(cfg)
    compiled = load_denoiser(cfg, module, "cpu")
    spec = denoiser_spec(module, SamplerSettings.from_config(cfg), 0.1)
    for batch in (1, 70):  # 70: past diffusers' `batch >= 64` branch, which torch.export saw as a guard
        inputs = spec.example_inputs(batch, seed=batch)
        with torch.no_grad():
            torch.testing.assert_close(compiled(*inputs), module(*inputs), rtol=1e-4, atol=1e-5)
