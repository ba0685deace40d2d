"""Timing: warmup, then repeated timed calls; raw samples kept, robust summaries reported.

On GPU each sample is a pair of CUDA events around the call, read after a device
synchronisation (events time the device, not the Python launch overhead); on CPU a
monotonic nanosecond clock. The first call (which includes lazy initialisation and, with
``torch.compile``, compilation) is timed apart and never mixed into the steady state.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class TimingResult:
    samples_ms: list[float]  # one per timed call, in order
    first_call_ms: float  # the very first call, compilation or lazy init included
    warmup: int  # calls made (after the first) before timing started

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.samples_ms))

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ms), q))

    @property
    def p10_ms(self) -> float:
        return self.percentile_ms(10)

    @property
    def p90_ms(self) -> float:
        return self.percentile_ms(90)

    @property
    def iqr_ms(self) -> float:
        return self.percentile_ms(75) - self.percentile_ms(25)

    def summary(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms,
                "iqr_ms": self.iqr_ms, "n": self.n, "first_call_ms": self.first_call_ms, "warmup": self.warmup}


def _cpu_time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def _cuda_timer(device: Any) -> Callable[[Callable[[], Any]], float]:
    def timed(fn: Callable[[], Any]) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end))

    return timed


def time_calls(fn: Callable[[], Any], warmup: int = 3, repeats: int = 10, device: str = "cpu",
               min_time_s: float = 0.0, max_repeats: int = 1000) -> TimingResult:
    """Time ``fn()``: one first call, ``warmup`` untimed calls, then at least ``repeats`` timed calls.

    ``min_time_s`` keeps timing (up to ``max_repeats``) until that much steady-state time has
    accumulated, so that very fast calls still get a stable median.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    timer = _cuda_timer(device) if device.startswith("cuda") else _cpu_time
    first = timer(fn)
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    samples: list[float] = []
    while len(samples) < repeats or (sum(samples) / 1e3 < min_time_s and len(samples) < max_repeats):
        samples.append(timer(fn))
    return TimingResult(samples, first, warmup)
