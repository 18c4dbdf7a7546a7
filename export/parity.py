"""Parity of an exported artifact with its PyTorch module on fresh random inputs."""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from clsp.errors import ClspError
from clsp.export.specs import EXAMPLE_BATCH, ModelSpec

PARITY_SEED = 1
"""Seed of the parity inputs: not the export's example inputs (seed 0)."""


@dataclass(frozen=True)
class Parity:
    """How far one output of the artifact is from the module's.

    ``max_rel`` is ``max |artifact - torch| / max |torch|``: relative to the output's scale, so elements near
    zero do not inflate it.
    """

    output: str
    batch: int
    max_abs: float
    max_rel: float
    rtol: float

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.rtol

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.output}: max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e} (rtol {self.rtol:.0e}) {verdict}"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def measure_parity(
    spec: ModelSpec, model: Callable[..., Tensor], rtol: float, batch: int, device: str | torch.device
) -> list[Parity]:
    """Run ``spec.module`` (where it is) and ``model`` (inputs on ``device``) on the same fresh inputs of
    ``batch`` samples; one :class:`Parity` per output."""
    inputs = spec.example_inputs(batch, seed=PARITY_SEED)
    reference = spec.module(*(x.to(spec.device) for x in inputs))
    actual = model(*(x.to(device) for x in inputs))
    references = reference if isinstance(reference, tuple | list) else (reference,)
    actuals = actual if isinstance(actual, tuple | list) else (actual,)
    found = []
    for name, ref, out in zip(spec.output_names, references, actuals, strict=True):
        ref, out = ref.detach().float().cpu(), torch.as_tensor(out).detach().float().cpu()
        if ref.shape != out.shape:
            raise ClspError(f"{spec.kind} export: output {name} has shape {list(out.shape)}, torch {list(ref.shape)}")
        max_abs = (out - ref).abs().max().item()
        found.append(Parity(name, batch, max_abs, max_abs / max(ref.abs().max().item(), 1e-12), rtol))
    return found


def check_parity(
    spec: ModelSpec, model: Callable[..., Tensor], fmt: str, rtol: float, device: str | torch.device, batch: int
) -> list[Parity]:
    """:func:`measure_parity`, raising ClspError with the figures when an output is outside ``rtol``.

    ``batch`` should differ from the export's example batch, so that the dynamic batch is exercised.
    """
    if batch == EXAMPLE_BATCH:
        raise ValueError("check parity at another batch than the example inputs'")
    found = measure_parity(spec, model, rtol, batch, device)
    failed = [p for p in found if not p.passed]
    if failed:
        figures = "; ".join(str(p) for p in failed)
        raise ClspError(
            f"{spec.kind} {fmt} export differs from PyTorch at batch {batch}: {figures}; nothing was written. "
            "Raise export.rtol (or export.trt_rtol) if this is expected, or skip the check with --no-check"
        )
    return found
