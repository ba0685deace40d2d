"""Benchmark: a suite of 6 counting cases on two CPU workers (--devices cpu,cpu) against the same suite run
serially, both measured here in one session. Cases of this kind spend most of their time starting a
process and importing torch, which two workers overlap; the run on workers must take less wall time."""

import time
from pathlib import Path

import pytest

from tests.test_launchers import SUITE  # six counting cases of DiT-S/8


@pytest.mark.benchmark
def test_two_cpu_workers_beat_one(benchmark, tmp_path: Path):
    import diffbench

    suite = tmp_path / "six.toml"
    suite.write_text(SUITE)
    seconds: dict[str, float] = {}

    def both() -> float:
        for name, devices in (("serial", None), ("workers", "cpu,cpu")):
            out = tmp_path / f"{name}-{len(seconds)}"
            t0 = time.perf_counter()
            run = diffbench.run(str(suite), out, devices=devices)
            seconds[name] = time.perf_counter() - t0
            assert run.statuses == {"ok": 6}
        return seconds["serial"] / seconds["workers"]

    ratio = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update(seconds)
    print(f"serial {seconds['serial']:.1f} s, two workers {seconds['workers']:.1f} s: {ratio:.2f}x")
    assert ratio > 1.2, seconds
