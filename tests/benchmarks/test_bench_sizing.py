"""Benchmark: matching 5 families x 4 targets, cold (a fresh process, nothing cached), in at most 30 s."""

import subprocess
import sys
import time

import pytest

SCRIPT = """
from diffbench.models.sizing import match
for fam in ("dit", "uvit", "vit", "unet-adm", "unet-ldm"):
    for target in (33e6, 130e6, 458e6, 675e6):
        r = match(fam, params=target, input_shape=(4, 32, 32))
        assert abs(r.rel_error) <= 0.01, (fam, target, r.rel_error)
"""


@pytest.mark.benchmark
def test_match_five_families_four_targets_cold(benchmark):
    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", SCRIPT], check=True)
        return time.perf_counter() - t0

    seconds = benchmark.pedantic(run, rounds=3, iterations=1)
    print(f"\nmatch 5 families x 4 targets, cold process: {seconds:.1f} s")
    assert benchmark.stats.stats.median <= 30.0
