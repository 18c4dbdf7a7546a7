"""Two gloo processes with gathered NT-Xent and global BatchNorm equal one process on the same global batch."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

CHECK = Path(__file__).with_name("distributed_check.py")


def _load_check():
    spec = importlib.util.spec_from_file_location("distributed_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_processes_match_one_process_loss_gradients_and_bn_stats(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    _load_check().run(single, rank=0, world=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(CHECK)]
    run = subprocess.run([*cmd, str(double)], env=env, timeout=120, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]

    reference = torch.load(single / "rank0.pt", weights_only=True)
    for rank in (0, 1):
        result = torch.load(double / f"rank{rank}.pt", weights_only=True)
        assert result.keys() == reference.keys()
        for key, expected in reference.items():
            torch.testing.assert_close(result[key], expected, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {key}")
