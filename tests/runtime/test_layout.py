"""Every backend reads the inputs clsp itself makes (odd strides included) as the torch modules do
(clsp/runtime/layout.py; the pt2 backend in tests/export/test_pt2.py)."""

from pathlib import Path

import pytest
import torch

from clsp.export.parity import odd_strides
from clsp.export.real_inputs import denoiser_real_inputs, encoder_real_inputs
from clsp.export.specs import run_denoiser, run_encoder
from clsp.features import normalise_images
from clsp.runtime.layout import standard_layout, standard_strides
from clsp.runtime.load import load_denoiser, load_encoder

CPU = torch.device("cpu")


def test_standard_layout_copies_only_what_is_not_row_major() -> None:
    standard = torch.randn(3, 1, 4, 4)
    assert standard_layout(standard) is standard and standard_strides((3, 1, 4, 4)) == (16, 16, 4, 1)
    nhwc = normalise_images(torch.randint(0, 256, (3, 4, 4, 1), dtype=torch.uint8).numpy(), [0.5], [0.2])
    expanded = torch.tensor(0.3).expand(3)
    for x in (nhwc, expanded, odd_strides(standard), standard.expand(3, 3, 4, 4)):
        assert x.stride() != standard_strides(x.shape)
        copy = standard_layout(x)
        assert copy.stride() == standard_strides(x.shape) and torch.equal(copy, x)
    assert nhwc.is_contiguous()  # why .contiguous() is not enough


@pytest.mark.parametrize("backend", ["ort", "torchscript"])
def test_backends_read_clsps_own_inputs_and_odd_strides_like_torch(exported_run: Path, config_of, backend: str) -> None:
    cfg = config_of(exported_run, f"positives.backend={backend}")
    module, backbone = run_encoder(cfg)
    (images,) = encoder_real_inputs(cfg, backbone).make(5, CPU)
    assert images.stride() == (256, 1, 16, 1)  # uint8 NHWC digits as normalise_images hands them over
    denoiser = run_denoiser(cfg)
    real = denoiser_real_inputs(cfg, 1).make(5, CPU)
    assert real[3].stride() == (0,)  # the sampler's w: positives.weight expanded to the batch
    encoder, _ = load_encoder(cfg, backend, "cpu")
    exported_denoiser = load_denoiser(cfg, denoiser, "cpu")
    with torch.no_grad():
        for x in (images, odd_strides(images)):
            torch.testing.assert_close(encoder(x), module(x), rtol=1e-5, atol=1e-5)
        for inputs in (real, tuple(odd_strides(x) for x in real)):
            torch.testing.assert_close(exported_denoiser(*inputs), denoiser(*inputs), rtol=1e-5, atol=1e-5)
