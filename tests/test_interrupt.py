"""Ctrl-C and SIGTERM stop a loop between steps; the command's exit status says which."""

import os
import signal

import pytest

from clsp.interrupt import Interrupted, exit_code, interrupted_error, stop_on_interrupt


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_sets_the_flag_and_names_the_exit_status(signum: int, status: int) -> None:
    with stop_on_interrupt() as stop:
        assert stop == [False]
        os.kill(os.getpid(), signum)  # delivered to the main thread before kill returns
        assert stop == [True]
    error = interrupted_error()
    assert isinstance(error, Interrupted)
    assert exit_code(error) == status
    assert exit_code(KeyboardInterrupt()) == 130


def test_the_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
