"""Parity of an exported artifact with its PyTorch module on the inputs it will meet.

Three input sets: fresh random tensors (standard strides), the same in a layout no exporter assumes
(:func:`odd_strides`), and, when the spec has them, inputs made from the run's own images by clsp's own
preprocessing (:attr:`ModelSpec.real_inputs`), strides included: an artifact that misreads what clsp feeds it
fails here, not silently in ``clsp features``.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from clsp.errors import ClspError
from clsp.export.specs import EXAMPLE_BATCH, ModelSpec

PARITY_SEED = 1
"""Seed of the parity inputs: not the export's example inputs (seed 0)."""

InputMaker = Callable[[int, torch.device], tuple[Tensor, ...]]
"""``(batch, device) -> inputs`` in the spec's input order, on ``device``."""


@dataclass(frozen=True)
class Parity:
    """How far one output of the artifact is from the module's on one input set (``inputs`` names it).

    ``max_rel`` is ``max |artifact - torch| / max |torch|``: relative to the output's scale, so elements near
    zero do not inflate it.
    """

    output: str
    inputs: str
    batch: int
    max_abs: float
    max_rel: float
    rtol: float

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.rtol

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.output} ({self.inputs}): max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e} "
            f"(rtol {self.rtol:.0e}) {verdict}"
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def odd_strides(x: Tensor) -> Tensor:
    """``x``'s values in a layout no exporter assumes: dimensions stored in reverse order with every other element
    skipped, so every stride differs from the row-major one (and the tensor is not dense)."""
    strides, step = [], 2
    for size in x.shape:
        strides.append(step)
        step *= size
    storage = torch.empty(2 * x.numel(), dtype=x.dtype, device=x.device)
    return storage.as_strided(x.shape, strides).copy_(x)


def input_sets(spec: ModelSpec) -> dict[str, InputMaker]:
    """The parity input sets of ``spec`` by name: ``random``, ``odd strides`` (the random ones in
    :func:`odd_strides`) and, when ``spec.real_inputs`` is set, its images as clsp preprocesses them."""

    def random(batch: int, device: torch.device) -> tuple[Tensor, ...]:
        return tuple(x.to(device) for x in spec.example_inputs(batch, seed=PARITY_SEED))

    sets: dict[str, InputMaker] = {
        "random": random,
        "odd strides": lambda batch, device: tuple(odd_strides(x) for x in random(batch, device)),
    }
    if spec.real_inputs is not None:
        sets[spec.real_inputs.source] = spec.real_inputs.make
    return sets


@torch.no_grad()
def measure_parity(
    spec: ModelSpec, model: Callable[..., Tensor], rtol: float, batch: int, device: str | torch.device
) -> list[Parity]:
    """Run ``spec.module`` (where it is) and ``model`` (inputs on ``device``) on each of :func:`input_sets` with
    ``batch`` samples; one :class:`Parity` per input set and output."""
    found = []
    for inputs_name, make in input_sets(spec).items():
        inputs = make(batch, torch.device(device))
        reference = spec.module(*(x.to(spec.device) for x in inputs))
        actual = model(*inputs)
        references = reference if isinstance(reference, tuple | list) else (reference,)
        actuals = actual if isinstance(actual, tuple | list) else (actual,)
        for name, ref, out in zip(spec.output_names, references, actuals, strict=True):
            ref, out = ref.detach().float().cpu(), torch.as_tensor(out).detach().float().cpu()
            if ref.shape != out.shape:
                raise ClspError(
                    f"{spec.kind} export: output {name} has shape {list(out.shape)}, torch {list(ref.shape)}"
                )
            max_abs = (out - ref).abs().max().item()
            found.append(Parity(name, inputs_name, batch, max_abs, max_abs / max(ref.abs().max().item(), 1e-12), rtol))
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
