"""Benchmark: the README's main job (the quick suite and its report) in at most 15 minutes on a 2-core CPU."""

import time

import pytest


@pytest.mark.benchmark
@pytest.mark.slow
def test_quick_suite_under_fifteen_minutes(cli, tmp_path, benchmark):
    out = tmp_path / "quick"

    def run() -> None:
        assert cli("run", "quick", "--out", str(out), "--no-progress", timeout=1800).returncode == 0
        assert cli("report", str(out), timeout=600).returncode == 0

    t0 = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    print(f"\nquick suite + report: {time.perf_counter() - t0:.0f} s")
    assert benchmark.stats.stats.median <= 15 * 60
    assert (out / "report" / "report.html").is_file()
