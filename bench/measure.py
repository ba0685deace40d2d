"""One measurement path for every subject: timing, memory (allocator, NVML, RSS), energy and MFU.

Whatever the subject (a backbone evaluation, a pipeline's end-to-end sample), its calls are timed
the same way (first call apart, warmup, repeats, ``min_time_s``), under the same precision
context, with NVML memory sampled in the background over all of them, energy integrated over a
window of at least ``ENERGY_WINDOW_S`` of the main call, and MFU given — or refused with the same
reasons — from the FLOPs the subject counted.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from diffbench.bench import precision
from diffbench.bench.spec import CaseSpec
from diffbench.bench.subjects import Evaluation, Subject
from diffbench.metrics import energy, memory, mfu
from diffbench.metrics.device import device_name
from diffbench.metrics.reading import Reading
from diffbench.metrics.timing import time_calls

ENERGY_WINDOW_S = 1.0  # the NVML energy counter updates every ~20-100 ms: measure over at least 1 s
NO_GPU_PEAK = "MFU needs a GPU peak; this ran on CPU"
NO_FLOPS = "MFU needs the FLOPs per image: add counts to the case's measure"


def _latency(t: Any, ev: Evaluation, main: bool, compiled: bool) -> dict[str, Reading]:
    tag, batch = ev.tag, ev.images
    out = {f"latency_ms{tag}": Reading(t.median_ms, "ms", samples=t.samples_ms, extra={**ev.extra, **t.summary()}),
           f"latency_per_image_ms{tag}": Reading(t.median_ms / batch, "ms", extra=ev.extra),
           f"throughput_img_s{tag}": Reading(batch / (t.median_ms / 1e3), "images/s", extra=ev.extra)}
    if main:
        out["latency_p10_ms"] = Reading(t.p10_ms, "ms")
        out["latency_p90_ms"] = Reading(t.p90_ms, "ms")
        out["first_call_ms"] = Reading(t.first_call_ms, "ms", extra={"includes": "compile" if compiled else "init"})
        if compiled:
            out["compile_ms"] = Reading(max(t.first_call_ms - t.median_ms, 0.0), "ms",
                                        extra={"estimate": "first call minus steady-state median"})
    return out


def _energy(ev: Evaluation, median_ms: float, device: str) -> dict[str, Reading]:
    """Energy of the main call over a window of at least ``ENERGY_WINDOW_S`` (one call off the GPU, where the
    meter says why it has no reading)."""
    n = max(1, math.ceil(ENERGY_WINDOW_S / max(median_ms / 1e3, 1e-6))) if device.startswith("cuda") else 1
    with energy.EnergyMeter(device) as meter:
        for _ in range(n):
            ev.run()
    return meter.readings(images=n * ev.images)


def _mfu(flops_per_image: float | None, median_ms: float, images: int, spec: CaseSpec) -> Reading:
    if not spec.device.startswith("cuda"):
        return Reading.unavailable("1", NO_GPU_PEAK)
    if flops_per_image is None:
        return Reading.unavailable("1", NO_FLOPS)

    # the precision names are the math-mode names of the MFU table
    return mfu.mfu(int(flops_per_image * images), 1e3 / median_ms, device_name(spec.device), spec.precision)


def measure(subject: Subject, spec: CaseSpec, counts: dict[str, Reading]) -> dict[str, Reading]:
    """Speed, memory and energy of ``subject`` as ``spec.measure`` asks; ``counts`` give MFU its FLOPs."""
    t0 = time.perf_counter()
    device, out = spec.device, dict[str, Reading]()
    evaluations = subject.evaluations()
    main = evaluations[0]
    with torch.no_grad(), precision.precision(spec.precision, device, spec.attention):
        memory.reset_allocator_peak(device)
        with memory.NvmlSampler(device, interval_s=spec.nvml_interval_s) as sampler:
            timings = []
            for ev in evaluations:
                t = time_calls(ev.run, spec.warmup, spec.repeats, device, spec.min_time_s)
                out.update(_latency(t, ev, ev is main, spec.compile))
                if ev is main:
                    out.update(subject.breakdown(t.n))
                timings.append(t)
            if spec.measures("energy"):
                out.update(_energy(main, timings[0].median_ms, device))
    if spec.measures("memory"):
        out.update(memory.allocator_peaks(device))
        out.update(sampler.readings())
        out["cpu_peak_rss_bytes"] = memory.peak_rss_bytes()
    out["mfu"] = _mfu(subject.flops_per_image(counts), timings[0].median_ms, main.images, spec)
    out["case_wall_s"] = Reading(time.perf_counter() - t0, "s")
    return out
