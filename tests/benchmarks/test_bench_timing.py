"""Timing validity: the harness's median for a fixed CPU workload is within 2% of a bare loop's."""

import statistics
import time

import pytest
import torch

from diffbench.metrics.timing import time_calls


@pytest.mark.benchmark
def test_harness_median_matches_a_bare_loop(benchmark):
    a = torch.randn(384, 384)

    def work():
        return a @ a @ a

    def bare(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            work()
            out.append((time.perf_counter_ns() - t0) / 1e6)
        return out

    for _ in range(20):
        work()
    # interleave the two, so drift in the machine's speed hits both alike
    bare_ms, harness_ms = [], []
    for _ in range(10):
        bare_ms += bare(20)
        harness_ms += time_calls(work, warmup=2, repeats=20).samples_ms
    ratio = statistics.median(harness_ms) / statistics.median(bare_ms)
    print(f"\nharness median {statistics.median(harness_ms):.4f} ms, bare loop {statistics.median(bare_ms):.4f} ms, "
          f"ratio {ratio:.4f}")
    benchmark.extra_info.update(harness_ms=statistics.median(harness_ms), bare_ms=statistics.median(bare_ms))
    benchmark.pedantic(work, rounds=5, iterations=1)
    assert abs(ratio - 1) <= 0.02
