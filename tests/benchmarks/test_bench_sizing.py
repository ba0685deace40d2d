"""Benchmark: `diffbench match` over 5 families x 4 targets, cold (a fresh process, nothing cached), in at most
30 s on a 2-core AVX2 machine at 2.0 GHz (the issue's reference machine; the assertion holds there)."""

import subprocess
import sys
import time

import pytest

ARGS = ["match", "--families", "dit,uvit,vit,unet-adm,unet-ldm", "--params", "33M,130M,458M,675M",
        "--input", "4x32x32", "--format", "json"]


@pytest.mark.benchmark
def test_match_five_families_four_targets_cold(benchmark):
    import json

    def run() -> float:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "diffbench", *ARGS], check=True, capture_output=True, text=True)
        rows = json.loads(out.stdout)
        assert len(rows) == 20 and all(abs(r["rel_error"]) <= 0.01 for r in rows)
        return time.perf_counter() - t0

    seconds = benchmark.pedantic(run, rounds=3, iterations=1)
    print(f"\nmatch 5 families x 4 targets, cold process: {seconds:.1f} s")
    assert benchmark.stats.stats.median <= 30.0


@pytest.mark.benchmark
def test_parallel_families_against_serial(benchmark):
    """The same 20 matches with the families in parallel workers and serially, in one run: the ratio."""
    import os

    def timed(workers: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diffbench", *ARGS], check=True, capture_output=True,
                       env=dict(os.environ, DIFFBENCH_SIZING_WORKERS=workers))
        return time.perf_counter() - t0

    serial = timed("1")
    parallel = benchmark.pedantic(lambda: timed("2"), rounds=1, iterations=1)
    print(f"\nserial {serial:.1f} s, 2 workers {parallel:.1f} s: {serial / parallel:.2f}x")
    assert parallel < serial
