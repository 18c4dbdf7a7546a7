"""The resumable training loop that both trainers (the DDPM, :mod:`clsp.diffusion.train`; contrastive training,
:mod:`clsp.contrastive.train`) run.

A stage supplies its model, optimizer, batches and a ``compute(batch, step)`` that returns the loss; the loop owns
the rest: claiming the stage folder (start check, one writer at a time), the Accelerator, the step count on
resume, the finiteness check over every process, the pending commit of a saved state (see
:mod:`clsp.training_state`), Ctrl-C / SIGTERM, the save cadence and the progress bar.

Every batch is a function of ``(run.seed, step, process)``: the data order comes from :class:`GlobalBatchSampler`
and a step's own draws from :func:`keyed_generator`, so a resumed run draws what the uninterrupted run would have.
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from rich.progress import TextColumn
from torch import Tensor, nn

from clsp.accelerator import stage_accelerator
from clsp.config import Config
from clsp.errors import ClspError
from clsp.interrupt import any_process, interrupted_error, stop_on_interrupt
from clsp.progress import print_summary, progress_bar
from clsp.run_folder import check_start, run_lock
from clsp.training_state import commit_pending_state, non_finite_loss, save_training_state


def derived_seed(*key: int) -> int:
    """A 63-bit seed from the integers ``key`` (NumPy's ``SeedSequence``): distinct keys give independent streams."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by :func:`derived_seed` of ``key``."""
    return torch.Generator().manual_seed(derived_seed(*key))


class GlobalBatchSampler:
    """Batches of ``(epoch, index)`` keys for one process, from optimizer step ``start_step`` to ``total_steps``.

    Epoch e shuffles the N indices with seed ``(seed, e)`` and cuts them into ``N // global_batch`` global batches
    (the rest is dropped); process r takes rows ``[r*b, (r+1)*b)`` of each, ``b = global_batch / num_processes``.
    P processes with batch B therefore see, together, exactly what one process with batch P*B sees.
    """

    def __init__(
        self, n: int, global_batch: int, rank: int, num_processes: int, seed: int, start_step: int, total_steps: int
    ) -> None:
        if global_batch % num_processes:
            raise ValueError(f"global batch {global_batch} is not divisible by {num_processes} processes")
        self.n, self.global_batch, self.rank, self.seed = n, global_batch, rank, seed
        self.local_batch = global_batch // num_processes
        self.steps_per_epoch = n // global_batch
        self.start_step, self.total_steps = start_step, total_steps

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order_epoch, order = -1, np.empty(0, dtype=np.int64)
        for step in range(self.start_step, self.total_steps):
            epoch, i = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, np.random.default_rng(derived_seed(self.seed, epoch)).permutation(self.n)
            start = i * self.global_batch + self.rank * self.local_batch
            yield [(epoch, int(k)) for k in order[start : start + self.local_batch]]


def training_accelerator(precision: str, section: str, **kwargs: Any) -> Accelerator:
    """The stage's Accelerator with ``<section>.mixed_precision`` = ``precision``, refused in one line where this
    machine cannot run it."""
    cuda = torch.cuda.is_available()
    if precision == "fp16" and not cuda:
        raise ClspError(f"{section}.mixed_precision=fp16 needs a CUDA GPU; use bf16 or no")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ClspError(f"{section}.mixed_precision=bf16: this GPU has no bf16; use fp16 or no")
    return stage_accelerator(precision, **kwargs)


@contextmanager
def claimed_stage(
    stage_dir: Path,
    cfg: Config,
    resume: bool,
    overwrite: bool,
    outputs: tuple[str, ...],
    resume_sections: tuple[str, ...],
    resume_safe: frozenset[str],
    accelerator: Callable[[], Accelerator],
) -> Iterator[Accelerator]:
    """Check that a run may start in ``stage_dir`` (:func:`~clsp.run_folder.check_start`: ``outputs`` of an earlier
    run are kept unless ``resume`` or ``overwrite``), make the Accelerator, and hold the folder's lock while the
    body trains."""
    check_start(stage_dir, cfg, resume, overwrite, outputs, resume_sections, resume_safe)
    made = accelerator()
    with run_lock(stage_dir, made.is_main_process):
        yield made


def check_resumed_step(step: int, total_steps: int, state_dir: Path, section: str, epochs: int) -> None:
    """Refuse a saved state that is already past the run's ``total_steps`` (fewer ``<section>.epochs`` now)."""
    if step > total_steps:
        raise ClspError(
            f"--resume: {state_dir} is at step {step}, past the {total_steps} steps of {section}.epochs={epochs}; "
            f"raise {section}.epochs"
        )


@dataclass
class LoopResult:
    step: int
    """Optimizer steps done in all (this call and the runs it resumed)."""
    interrupted: bool
    losses: list[float]
    """The loss of every step this call ran (mean over processes)."""


@dataclass
class TrainingLoop:
    """One stage's optimizer loop; :meth:`run` drives it (see the module docstring)."""

    accelerator: Accelerator
    model: nn.Module
    optimizer: torch.optim.Optimizer
    state_dir: Path
    section: str
    """The config section (``ssl``, ``diffusion``) that errors name."""
    description: str
    """The progress bar's label."""
    total_steps: int
    save_every: int
    """Steps between saved states (and a save at the last step and on interrupt)."""
    state: Callable[[int], tuple[dict[str, Any], dict[str, dict[str, Tensor]] | None]]
    """``step -> (progress.json, extra tensor files)`` of the stage's state at that step."""
    grad_clip: float | None = None

    def run(
        self,
        step: int,
        stop_at: int,
        batches: Iterable[Any],
        compute: Callable[[Any, int], tuple[Tensor, Tensor]],
        after_step: Callable[[int, Tensor], None] | None = None,
    ) -> LoopResult:
        """Train from ``step`` until ``stop_at`` (``batches`` holds one batch per step in that range) or an
        interrupt. ``compute(batch, step) -> (loss, sums)``: the loss to back-propagate and a float vector of this
        process's figures, ``sums[0]`` the loss, summed over processes before they are checked finite;
        ``after_step(step, summed)`` runs after each optimizer step, before its state may be saved (an EMA, epoch
        metrics). The state is saved every :attr:`save_every` steps as pending, committed once the next step's loss
        is finite, and for good at ``stop_at`` or on an interrupt (Ctrl-C / SIGTERM stop after the current step)."""
        accelerator, processes = self.accelerator, self.accelerator.num_processes
        losses: list[float] = []
        interrupted = pending = False
        with stop_on_interrupt() as stop, progress_bar(TextColumn("loss {task.fields[loss]}")) as bar:
            visible = accelerator.is_main_process
            task = bar.add_task(self.description, total=self.total_steps, completed=step, loss="-", visible=visible)
            for batch in batches:
                loss, sums = compute(batch, step)
                summed = accelerator.reduce(sums, "sum") if processes > 1 else sums
                if not torch.isfinite(summed).all():
                    raise non_finite_loss(summed[0].item(), step, self.state_dir, self.section)
                if pending:  # the saved weights gave a finite loss
                    commit_pending_state(accelerator, self.state_dir)
                    pending = False
                accelerator.backward(loss)
                if self.grad_clip is not None:
                    accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                if after_step is not None:
                    after_step(step, summed)
                losses.append(summed[0].item() / processes)
                bar.update(task, advance=1, loss=f"{losses[-1]:.4f}")
                interrupted = any_process(accelerator, stop[0])
                last = interrupted or step == stop_at
                if last or step % self.save_every == 0:
                    pending = not last
                    progress, extra = self.state(step)
                    save_training_state(
                        accelerator, self.state_dir, self.model, self.optimizer, progress, extra, pending
                    )
                if interrupted:
                    break
        return LoopResult(step, interrupted, losses)


def report(result: Any, title: str) -> Any:
    """Print a training result's ``summary()`` (main process) and raise :class:`~clsp.interrupt.Interrupted` after
    it for an interrupted run (exit 130 or 143); else return ``result``."""
    if PartialState().is_main_process:
        print_summary(title, result.summary())
    if result.interrupted:
        raise interrupted_error()
    return result
