"""Benchmark: the CLI answers --help and --version in under 0.5 s (torch, 1.0 s, is not imported for them)."""

import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT


@pytest.mark.benchmark
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_start_fast(benchmark, flag):
    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diffbench", flag], check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - t0

    seconds = benchmark.pedantic(run, rounds=5, iterations=1)
    print(f"\ndiffbench {flag}: {seconds:.2f} s (last of 5)")
    assert benchmark.stats.stats.median < 0.5
