"""How the training scripts exit: whatever the work did, the process group it joined is closed first."""

import subprocess
import sys

import pytest

# Runs in a fresh interpreter: a process group made in pytest's own process would outlive a failing test.
PROGRAM = """
import sys
from clsp.cli_args import close_process_group, run_script, script_parser
from clsp.errors import ClspError

close_process_group()
assert "torch" not in sys.modules, "closing must not import torch"

import torch
import torch.distributed as dist

def work():
    dist.init_process_group("gloo", init_method=sys.argv[1], rank=0, world_size=1)
    total = torch.ones(3)
    dist.all_reduce(total)
    if sys.argv[2] == "fails":
        raise ClspError("the work failed")

try:
    run_script(script_parser("test", "state"), work)
except SystemExit as e:
    print("exit", e.code)
print("initialized after:", dist.is_initialized())
"""


@pytest.mark.parametrize(("outcome", "exit_line"), [("finishes", ""), ("fails", "exit 2\n")])
def test_run_script_closes_the_process_group_the_work_joined(tmp_path, outcome: str, exit_line: str) -> None:
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    run = subprocess.run(
        [sys.executable, "-c", PROGRAM, rendezvous, outcome], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout == f"{exit_line}initialized after: False\n"
