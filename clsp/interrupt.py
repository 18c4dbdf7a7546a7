"""Ctrl-C as a flag that training loops check between steps, agreed on by every process."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator


@contextmanager
def stop_on_interrupt() -> Iterator[list[bool]]:
    """Turn Ctrl-C into ``flag[0] = True``, so a loop can finish its step and save a consistent state."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is set on any, so all of them stop after the same step."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "max").item())
