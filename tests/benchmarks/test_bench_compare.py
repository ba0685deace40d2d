"""Benchmark: comparing two 500-case runs (20 timing samples per case, counts, memory, a FID) in under 5 s."""

import random
import time

import pytest

from diffbench.core import records
from diffbench.core.records import Record

PROV = {"git_commit": "abc", "git_dirty": False, "torch_version": "2.14.1", "device_name": "Test CPU"}


def big_run(d, seed):
    rng = random.Random(seed)
    recs = []
    for k in range(500):
        config = {"model": {"label": f"m{k}"}, "batch_size": 4, "precision": "fp32", "device": "cpu"}
        samples = [10.0 * rng.gauss(1, 0.03) for _ in range(20)]
        rows = [("params", 1e6, "count", None), ("gmacs", 0.25, "GMAC", None),
                ("latency_ms", sorted(samples)[10], "ms", samples), ("throughput_img_s", 400.0, "images/s", None),
                ("cpu_peak_rss_bytes", 1e9, "bytes", None), ("fid[digits]", 40.0, "1", None)]
        recs += [Record("r", f"c{k:015d}", "t", config, m, v, u, samples=s, case_size=len(rows), provenance=PROV)
                 for m, v, u, s in rows]
    d.mkdir()
    records.append(d / "records.jsonl", recs)
    return d


@pytest.mark.benchmark
def test_compare_two_500_case_runs(benchmark, tmp_path):
    import diffbench

    a, b = big_run(tmp_path / "a", 1), big_run(tmp_path / "b", 2)

    def run() -> float:
        t0 = time.perf_counter()
        result = diffbench.compare(a, b)
        assert len({v.case for v in result.verdicts}) == 500 and not result.failed
        return time.perf_counter() - t0

    seconds = benchmark.pedantic(run, rounds=3, iterations=1)
    print(f"\ncompare 2 x 500 cases: {seconds:.2f} s")
    assert benchmark.stats.stats.median <= 5.0
