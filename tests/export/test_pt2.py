"""``.pt2``: torch.export with a dynamic batch, compiled by AOTInductor (tens of seconds, so one slow test)."""

import json
from pathlib import Path

import pytest
import torch

from clsp.diffusion.sampler import SamplerSettings
from clsp.export.artifacts import METADATA_FILE, artifact_dir, pt2_device
from clsp.export.parity import odd_strides
from clsp.export.real_inputs import denoiser_real_inputs, encoder_real_inputs
from clsp.export.specs import denoiser_spec, run_denoiser, run_encoder
from clsp.runtime.load import load_denoiser, load_encoder


@pytest.mark.slow
def test_pt2_exports_load_and_match_torch_at_any_batch_and_on_clsps_own_inputs(
    fresh_run: Path, config_of, command
) -> None:
    result = command("export", fresh_run, "--pt2")  # `clsp export CONFIG --pt2`: each compile takes seconds
    assert result.exit_code == 0, result.output
    assert "denoiser pt2" in result.output and "encoder pt2" in result.output and "built in" in result.output
    assert sorted(p.name for p in (fresh_run / "export").iterdir()) == ["config.yaml", "pt2"]
    for kind in ("denoiser", "encoder"):
        metadata = json.loads((artifact_dir(fresh_run, "pt2", kind) / METADATA_FILE).read_text())
        assert len(metadata["parity"]) == 3 and all(p["max_rel"] <= 1e-4 for p in metadata["parity"])
        assert metadata["settings"] == {"device": pt2_device()}
    cfg = config_of(fresh_run, "positives.backend=pt2")
    device = torch.device(pt2_device())
    module = run_denoiser(cfg).to(device)
    compiled = load_denoiser(cfg, module, device)
    spec = denoiser_spec(module, SamplerSettings.from_config(cfg), 0.1)
    real = denoiser_real_inputs(cfg, 1)
    encoder, backbone = run_encoder(cfg)
    encoder = encoder.to(device)
    compiled_encoder, _ = load_encoder(cfg, "pt2", device)
    with torch.no_grad():
        for batch in (1, 70):  # 70: past diffusers' `batch >= 64` branch, which torch.export saw as a guard
            inputs = spec.example_inputs(batch, seed=batch)
            torch.testing.assert_close(compiled(*inputs), module(*inputs), rtol=1e-4, atol=1e-5)
        # What clsp itself feeds: w expanded to the batch (stride 0), [N, 1, 16, 16] images with strides
        # (256, 1, 16, 1) from NHWC; AOTInductor code misreads both unless handed row-major copies.
        for inputs in (real.make(5, device), tuple(odd_strides(x) for x in real.make(5, device))):
            torch.testing.assert_close(compiled(*inputs), module(*inputs), rtol=1e-5, atol=1e-5)
        (images,) = encoder_real_inputs(cfg, backbone).make(64, device)
        for x in (images, odd_strides(images)):
            torch.testing.assert_close(compiled_encoder(x), encoder(x), rtol=1e-5, atol=1e-5)
