"""Ctrl-C and SIGTERM as a flag that training loops check between steps, agreed on by every process.

SIGTERM is what SLURM, Kubernetes and spot preemption send before they kill a job: it is handled as Ctrl-C is (the
loop finishes its step and saves its state), and the command then exits 143 (Ctrl-C: 130), so ``--resume`` on the
rescheduled job continues from that state."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelerate import Accelerator


class Interrupted(Exception):
    """Raised after a loop stopped on a signal and saved its state; ``exit_code`` is 128 + the signal number.

    Not a KeyboardInterrupt: Typer turns those into exit 130 whatever the signal was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


_received: list[int] = []


def interrupted_error() -> Interrupted:
    """The :class:`Interrupted` for the last signal a loop stopped on (SIGINT when none was recorded)."""
    return Interrupted(_received[-1] if _received else signal.SIGINT)


def exit_code(error: BaseException) -> int:
    """The exit status for an interruption (:class:`Interrupted` or KeyboardInterrupt): 143 after SIGTERM, 130
    after Ctrl-C."""
    return getattr(error, "exit_code", 128 + signal.SIGINT)


@contextmanager
def stop_on_interrupt() -> Iterator[list[bool]]:
    """Turn Ctrl-C and SIGTERM into ``flag[0] = True``, so a loop can finish its step and save a consistent state."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        _received.append(signum)
        flag[0] = True

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of DataLoader workers: ignore Ctrl-C and SIGTERM, which a terminal or a scheduler (SLURM
    signals every process of a job) also sends to them, so that only the main process stops the loop, after its
    step; the workers end with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def any_process(accelerator: "Accelerator", flag: bool) -> bool:
    """True on every process when ``flag`` is set on any, so all of them stop after the same step."""
    if accelerator.num_processes == 1:
        return flag
    import torch

    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "max").item())
