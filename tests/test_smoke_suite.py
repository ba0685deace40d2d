"""The built-in smoke suite end to end on this CPU: complete records, each with its provenance."""

import json
import time

import pytest

from diffbench.core import records
from diffbench.core.records import Record

PROVENANCE_KEYS = {"git_commit", "git_dirty", "diffbench_version", "torch_version", "cuda_version", "driver_version",
                   "python_version", "device_name", "host", "precision", "seed", "started_at", "recorded_at"}


def check_complete(run_dir) -> list[Record]:
    got = records.read(run_dir / "records.jsonl")
    assert got.problems == []
    cases = json.loads((run_dir / "suite.resolved.json").read_text())["cases"]
    by_case: dict[str, list[Record]] = {}
    for r in got.records:
        by_case.setdefault(r.case_id, []).append(r)
    assert set(by_case) == {c["case_id"] for c in cases}
    for recs in by_case.values():
        assert len(recs) == recs[0].case_size
        for r in recs:
            assert set(r.provenance) >= PROVENANCE_KEYS
            assert r.status in ("ok", "unsupported")
            assert (r.value is None) == (r.status != "ok") and (r.error is None) == (r.status == "ok")
    return got.records


@pytest.mark.slow  # ~90 s; its cases' sizing is in test_case_contract, their records in the runner tests
def test_smoke_suite_runs_completely(cli, tmp_path):
    t0 = time.perf_counter()
    proc = cli("run", "smoke", "--out", str(tmp_path / "smoke"), "--no-progress", timeout=900)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert "10 case(s), 0 already complete; ok 10" in proc.stdout
    recs = check_complete(tmp_path / "smoke")
    metrics = {r.metric for r in recs}
    assert {"params", "gmacs", "latency_ms", "throughput_img_s", "cpu_peak_rss_bytes", "mfu"} <= metrics
    lat = next(r for r in recs if r.metric == "latency_ms")
    assert lat.samples and len(lat.samples) == lat.extra["n"] and lat.extra["p10_ms"] <= lat.value
    families = {r.config["model"]["family"] for r in recs}
    assert families == {"dit", "uvit", "vit", "unet-adm", "unet-ldm"}
    print(f"\nsmoke suite: {elapsed:.0f} s")


@pytest.mark.benchmark
def test_smoke_suite_under_three_minutes(cli, tmp_path, benchmark):
    def run():
        proc = cli("run", "smoke", "--out", str(tmp_path / f"s{time.time_ns()}"), "--no-progress", timeout=900)
        assert proc.returncode == 0

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert benchmark.stats.stats.median < 180
