"""Memory: the torch allocator's exact peaks, NVML's view of the card sampled in the background,
and the process's peak RSS on CPU.

The allocator peak is what this process's tensors needed; NVML's used memory is what the
card holds (CUDA context, caching-allocator slack and other processes included). Both are
reported, labelled, because both get quoted.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field

import torch

from diffbench.metrics.nvml import handle_for
from diffbench.metrics.reading import Reading


def reset_allocator_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def allocator_peaks(device: str) -> dict[str, Reading]:
    if not device.startswith("cuda"):
        why = "torch CUDA allocator: not a CUDA device"
        return {"peak_mem_allocated_bytes": Reading.unavailable("bytes", why),
                "peak_mem_reserved_bytes": Reading.unavailable("bytes", why)}

    torch.cuda.synchronize(device)
    return {"peak_mem_allocated_bytes": Reading(float(torch.cuda.max_memory_allocated(device)), "bytes"),
            "peak_mem_reserved_bytes": Reading(float(torch.cuda.max_memory_reserved(device)), "bytes")}


def peak_rss_bytes() -> Reading:
    """Peak resident set size of this process since it started (each case runs in its own process)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return Reading(float(rss * scale), "bytes")


@dataclass
class NvmlSampler:
    """Samples the card's used memory (and this process's, where NVML reports it) on a thread."""

    device: str
    interval_s: float = 0.01
    peak_used: int = 0
    peak_process: int | None = None
    n_samples: int = 0
    reason: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> NvmlSampler:
        self._lib, self._handle, self.reason = handle_for(self.device)
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        info = self._lib.nvmlDeviceGetMemoryInfo(self._handle)
        self.peak_used = max(self.peak_used, int(info.used))
        try:
            for p in self._lib.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if p.pid == os.getpid() and p.usedGpuMemory is not None:
                    self.peak_process = max(self.peak_process or 0, int(p.usedGpuMemory))
        except Exception:  # not permitted in some containers: stays None, reason below
            pass
        self.n_samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()  # one reading at the synchronised edge

    def readings(self) -> dict[str, Reading]:
        if self._handle is None:
            why = self.reason or "NVML not available"
            return {"nvml_peak_used_bytes": Reading.unavailable("bytes", why),
                    "nvml_process_peak_bytes": Reading.unavailable("bytes", why)}
        proc = (Reading(float(self.peak_process), "bytes") if self.peak_process is not None else
                Reading.unavailable("bytes", "NVML reports no per-process memory here (container or MIG)"))
        return {"nvml_peak_used_bytes": Reading(float(self.peak_used), "bytes",
                                                extra={"samples": self.n_samples, "interval_s": self.interval_s}),
                "nvml_process_peak_bytes": proc}
