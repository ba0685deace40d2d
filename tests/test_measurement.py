"""Timing statistics, not-available readings without a GPU, MFU table, precision settings."""

import pytest
import torch

from diffbench.bench.precision import precision
from diffbench.core.errors import CaseUnsupported
from diffbench.metrics import energy, memory
from diffbench.metrics.mfu import mfu, peak_for
from diffbench.metrics.timing import TimingResult, time_calls


def test_timing_statistics_from_known_samples():
    t = TimingResult(samples_ms=[float(x) for x in range(1, 11)], first_call_ms=100.0, warmup=2)
    assert t.n == 10 and t.median_ms == 5.5
    assert t.p10_ms == pytest.approx(1.9) and t.p90_ms == pytest.approx(9.1)
    assert t.iqr_ms == pytest.approx(7.75 - 3.25)
    assert t.summary()["first_call_ms"] == 100.0


def test_time_calls_counts_first_warmup_and_repeats():
    calls = []
    t = time_calls(lambda: calls.append(1), warmup=3, repeats=7)
    assert len(calls) == 1 + 3 + 7 and t.n == 7
    assert all(s >= 0 for s in t.samples_ms)


def test_time_calls_min_time_extends_sampling():
    t = time_calls(lambda: None, warmup=0, repeats=2, min_time_s=0.002, max_repeats=50)
    assert 2 < t.n <= 50 or sum(t.samples_ms) >= 2.0


def test_first_call_is_kept_apart():
    state = {"first": True}

    def fn():
        if state.pop("first", False):
            torch.ones(1)  # any work
            import time

            time.sleep(0.05)

    t = time_calls(fn, warmup=1, repeats=5)
    assert t.first_call_ms >= 50 and max(t.samples_ms) < 50


def test_cpu_readings_say_why_gpu_quantities_are_missing():
    peaks = memory.allocator_peaks("cpu")
    assert all(r.value is None and "not a CUDA device" in r.reason for r in peaks.values())
    with memory.NvmlSampler("cpu") as s:
        pass
    assert all(r.value is None and r.reason for r in s.readings().values())
    with energy.EnergyMeter("cpu") as m:
        pass
    assert all(r.value is None and r.reason for r in m.readings(images=4).values())
    rss = memory.peak_rss_bytes()
    assert rss.value and rss.value > 10e6


@pytest.mark.parametrize("name,mode,tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4), ("NVIDIA H100 PCIe", "bf16", 756.0), ("NVIDIA H200", "bf16", 989.4),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156.0), ("NVIDIA A100-PCIE-40GB", "fp16", 312.0), ("NVIDIA L40S", "bf16", 362.05),
    ("NVIDIA L4", "bf16", 121.0), ("NVIDIA A10G", "fp16", 125.0), ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
    ("Tesla V100-SXM2-16GB", "fp16", 125.0),
])
def test_peak_table(name, mode, tflops):
    peak, source = peak_for(name, mode)
    assert peak == pytest.approx(tflops * 1e12)
    assert "datasheet" in source or "whitepaper" in source


def test_mfu_value_and_unknowns():
    r = mfu(flops_per_eval=int(989.4e12 / 2), evals_per_s=1.0, device_name="NVIDIA H100 80GB HBM3", math_mode="bf16")
    assert r.value == pytest.approx(0.5) and r.extra["peak_tflops"] == pytest.approx(989.4)
    assert mfu(1, 1.0, "Tesla V100-SXM2-16GB", "bf16").value is None
    assert "no peak" in mfu(1, 1.0, "Some New GPU", "bf16").reason


def test_precision_settings():
    with pytest.raises(CaseUnsupported, match="tf32"), precision("tf32", "cpu", "auto"):
        pass
    with precision("bf16", "cpu", "auto"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with precision("fp32", "cpu", attention="math"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    assert not torch.backends.cuda.matmul.allow_tf32
