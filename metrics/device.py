"""Device facts recorded with a run: name, memory, driver, CUDA, compute capability, MIG, clocks."""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from diffbench.core.errors import ConfigError
from diffbench.metrics.nvml import handle_for, text


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str = "cpu") -> str:
    """The one name of a device: the GPU's as CUDA reports it (what the MFU table matches), else the CPU model."""
    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    return cpu_name()


def resolve_device(spec: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; validates 'cuda:N'."""
    if spec == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA device is visible here; use --device cpu or auto")
        idx = torch.device(spec).index or 0
        if idx >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return f"cuda:{idx}"
    raise ConfigError(f"--device {spec!r} is not auto, cpu or cuda[:N]")


def calibration(device: str, seconds: float = 0.25) -> dict[str, float]:
    """Dense matmul throughput of this device (fp32; bf16 too on a GPU), so that wall times measured on two
    machines of one kind (which differ about 3x in speed) can be compared: GFLOP/s of an n x n matmul, n = 512 on
    a CPU and 4096 on a GPU, timed over at least ``seconds``."""
    cuda = device.startswith("cuda")
    n = 4096 if cuda else 512
    out: dict[str, float] = {"matmul_n": n}
    for name, dtype in (("fp32", torch.float32), *((("bf16", torch.bfloat16),) if cuda else ())):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        calls, t0 = 0, time.perf_counter()
        while True:
            a @ b
            calls += 1
            if cuda:
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        out[f"{name}_matmul_gflops"] = round(2 * n**3 * calls / elapsed / 1e9, 1)
    return out


def device_facts(device: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda_runtime": torch.version.cuda}
    facts.update({f"calibration_{k}": v for k, v in calibration(device).items()})
    if not device.startswith("cuda"):
        facts.update(name=cpu_name(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                     machine=platform.machine())
        return facts
    idx = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(idx)
    facts.update(name=device_name(device), total_memory_bytes=props.total_memory,
                 compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    lib, handle, reason = handle_for(device)
    if handle is None:
        facts["nvml"] = reason
        return facts
    facts["driver"] = text(lib.nvmlSystemGetDriverVersion())
    for key, fn in [("mig_mode", lambda: lib.nvmlDeviceGetMigMode(handle)[0]),
                    ("sm_clock_mhz", lambda: lib.nvmlDeviceGetClockInfo(handle, lib.NVML_CLOCK_SM)),
                    ("max_sm_clock_mhz", lambda: lib.nvmlDeviceGetMaxClockInfo(handle, lib.NVML_CLOCK_SM)),
                    ("mem_clock_mhz", lambda: lib.nvmlDeviceGetClockInfo(handle, lib.NVML_CLOCK_MEM)),
                    ("power_limit_w", lambda: lib.nvmlDeviceGetPowerManagementLimit(handle) / 1e3)]:
        try:
            facts[key] = fn()
        except Exception as e:
            facts[key] = f"not available: {str(e)[:60]}"
    return facts
