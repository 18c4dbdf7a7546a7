"""Device choice: ``auto`` takes a usable CUDA GPU, else the CPU and says so; explicit devices are checked."""

from pathlib import Path

import pytest
import torch

from clsp.accelerator import describe_device, has_native_bf16, pick_device
from clsp.errors import ClspError


def test_auto_picks_the_cpu_without_cuda_and_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = pick_device("auto")
    assert device == torch.device("cpu")
    assert describe_device(device, "auto") == "cpu (no CUDA GPU found)"
    assert describe_device(pick_device("cpu"), "cpu") == "cpu"


def test_auto_picks_cuda_when_it_is_usable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


@pytest.mark.parametrize(
    ("requested", "message"),
    [("gpu", "use auto, cpu, cuda or cuda:N"), ("mps", "use auto, cpu, cuda or cuda:N"), ("cuda:x", "use auto")],
)
def test_unknown_devices_are_refused_in_one_line(requested, message):
    with pytest.raises(ClspError, match=message):
        pick_device(requested)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_not_replaced_by_the_cpu():
    with pytest.raises(ClspError, match="no CUDA GPU is usable here.*use --device cpu"):
        pick_device("cuda")


@pytest.mark.parametrize(
    ("flags", "native"),
    [({"avx2": True}, False), ({"avx512_f": True, "avx512_bf16": False}, False), ({"avx512_bf16": True}, True),
     ({"amx_bf16": True}, True)],
)  # fmt: skip
def test_cpu_bf16_units_are_read_from_torchs_capability_flags(monkeypatch, flags, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    assert has_native_bf16(torch.device("cpu")) is native


def test_this_cpus_bf16_units_agree_with_proc_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo here")
    flags = set(cpuinfo.read_text().split())
    assert has_native_bf16(torch.device("cpu")) is bool(flags & {"avx512_bf16", "amx_bf16"})
