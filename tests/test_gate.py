"""The regression gate cannot be fooled: a baseline carries what the test needs (the per-process values), a run
with no case ok fails its CI step and cannot become a baseline, and noise is reported beside the verdicts."""

import json
import math
from pathlib import Path

import pytest

import diffbench
from diffbench.core import records
from diffbench.core.records import Record
from diffbench.reports import noise
from tests.test_hostile_runs import ONE_CASE
from tests.test_runner import run

CFG = {"model": {"label": "unet-adm@0.7M", "family": "unet-adm"}, "batch_size": 32, "precision": "fp32",
       "device": "cpu"}
PROV = {"device_name": "test-cpu", "torch_version": "2.14.1", "git_commit": "abc", "git_dirty": False}


def timed_run(d: Path, processes: list[list[float]], calibration: float = 200.0) -> Path:
    """A run whose one case was timed in several processes (repetitions), as bench/repetitions.py merges them: the
    raw samples of every process, the median of the per-process medians, the per-process medians in extra."""
    d.mkdir(parents=True)
    medians = [sorted(p)[len(p) // 2] for p in processes]
    rec = Record("r-" + d.name, "c1", "ci-cpu", CFG, "latency_ms", sorted(medians)[len(medians) // 2], "ms",
                 samples=[x for p in processes for x in p], extra={"repetitions": medians}, case_size=2,
                 provenance=PROV)
    params = Record("r-" + d.name, "c1", "ci-cpu", CFG, "params", 664_100.0, "count", case_size=2, provenance=PROV)
    records.append(d / "records.jsonl", [params, rec])
    (d / "device.json").write_text(json.dumps({"calibration_fp32_matmul_gflops": calibration}))
    return d


# one slow process among four on the base side (a busy machine), four steady ones on the new side
BASE = [[187.0, 190.0, 189.0, 191.0, 188.0], [200.0, 199.0, 201.0, 203.0, 198.0],
        [2312.0, 2290.0, 2350.0, 2301.0, 2330.0], [195.0, 196.0, 194.0, 197.0, 193.0]]
NEW = [[40.0, 41.0, 39.0, 40.5, 40.2], [42.0, 41.5, 42.2, 41.8, 42.5], [39.5, 40.1, 39.8, 40.3, 39.9],
       [41.0, 40.7, 41.2, 40.9, 41.1]]


def verdicts(result):
    return [(v.case, v.metric, v.verdict, v.p_value, v.note) for v in result.verdicts]


def test_a_baseline_gives_the_verdicts_of_its_run(tmp_path):
    a, b = timed_run(tmp_path / "a", BASE), timed_run(tmp_path / "b", NEW)
    base = diffbench.baseline(a, tmp_path / "base.json")
    direct, through = diffbench.compare(a, b), diffbench.compare(base, b)
    assert verdicts(through) == verdicts(direct)
    [lat] = [v for v in direct.verdicts if v.metric == "latency_ms"]
    # 4 against 4 processes: the smallest p is 1/70; the pooled samples (the old baseline's route) gave 1.2e-05
    assert lat.verdict == "improvement" and lat.p_value == pytest.approx(1 / 70)
    assert "4 vs 4 repetitions (one per process)" in lat.note
    stored = json.loads(base.read_text())
    assert stored["version"] == 2 and stored["device"] == {"calibration_fp32_matmul_gflops": 200.0}
    assert [m.get("extra") for m in stored["cases"][0]["metrics"]] == [None, {"repetitions": [189.0, 200.0, 2312.0,
                                                                                             195.0]}]


def test_noise_is_reported_beside_the_verdicts(tmp_path):
    a, b = timed_run(tmp_path / "a", BASE), timed_run(tmp_path / "b", NEW, calibration=100.0)
    result = diffbench.compare(a, b)
    [lat] = [v for v in result.verdicts if v.metric == "latency_ms"]
    assert lat.spread == pytest.approx(2312 / 189) and "spread 12x / 1.1x over 4 vs 4 processes" in lat.note
    assert 0 < lat.detectable < math.inf
    joined = " ".join(result.warnings)
    assert "noisy: unet-adm@0.7M/b32/fp32 latency_ms spread 12.2x" in joined
    assert "matmul calibration is -50% from the base's" in joined
    # 3 against 3 processes can never give p < 0.05: nothing is detectable, and the warning says so
    three = diffbench.compare(timed_run(tmp_path / "c", BASE[:3]), timed_run(tmp_path / "d", NEW[:3]))
    [lat3] = [v for v in three.verdicts if v.metric == "latency_ms"]
    assert lat3.detectable == math.inf and "smallest change detectable: no change at all" in lat3.note
    assert any("could not detect a 5% change (smallest detectable: none at all)" in w for w in three.warnings)


def test_detectable_change_follows_the_spread():
    steady = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2]
    noisy = [100.0, 130.0, 80.0, 120.0, 90.0, 110.0]
    assert noise.detectable(steady, steady, 0.05) < 0.03 < noise.detectable(noisy, noisy, 0.05) < 0.6


def test_a_run_with_no_case_ok_fails_and_cannot_become_a_baseline(tmp_path, cli):
    suite = tmp_path / "one.toml"
    suite.write_text(ONE_CASE)
    every = {"DIFFBENCH_INJECT_FAULTS": json.dumps({"*": "raise"})}
    proc = run([str(suite), "--out", str(tmp_path / "broken")], every)
    assert proc.returncode == 1 and "no case of the run finished ok (error 2)" in proc.stderr, proc.stderr
    assert len(records.read(tmp_path / "broken" / "records.jsonl").records) == 2  # the failures are recorded
    refused = cli("baseline", str(tmp_path / "broken"), "-o", str(tmp_path / "b.json"))
    assert refused.returncode == 2 and "2 of 2 case(s) did not finish ok" in refused.stderr
    assert "--allow-failed" in refused.stderr and not (tmp_path / "b.json").exists()
    assert cli("baseline", str(tmp_path / "broken"), "-o", str(tmp_path / "b.json"), "--allow-failed").returncode == 0

    one = {"DIFFBENCH_INJECT_FAULTS": json.dumps({"*/b1/*": "raise"})}
    assert run([str(suite), "--out", str(tmp_path / "half")], one).returncode == 0  # one of two ok
    strict = run([str(suite), "--out", str(tmp_path / "strict"), "--strict"], one)
    assert strict.returncode == 1 and "--strict: not every case finished ok (error 1)" in strict.stderr


def test_missing_data_in_the_new_run_fails_and_is_named(tmp_path, cli):
    base = timed_run(tmp_path / "base", NEW)
    # the new run: its latency line unreadable (and 10x slower, which the lost line would have shown)
    slow = timed_run(tmp_path / "slow", [[10 * x for x in p] for p in NEW])
    lines = (slow / "records.jsonl").read_text().splitlines()
    (slow / "records.jsonl").write_text(lines[0] + "\n" + lines[1][:40] + "#garbage\n")
    result = diffbench.compare(base, slow)
    assert result.failed
    [miss] = [v for v in result.verdicts if v.verdict == "missing"]
    assert miss.metric == "latency_ms" and "not in the new run" in miss.note
    assert any("the new run has 1 unreadable line(s)" in w for w in result.warnings)
    proc = cli("compare", str(base), str(slow))
    assert proc.returncode == 1 and "missing" in proc.stdout and "unreadable line" in proc.stdout

    # a new run with a base case absent (killed before it), and one allowed by a policy
    extra = timed_run(tmp_path / "two", NEW)
    other = Record("r-two", "c2", "ci-cpu", {**CFG, "batch_size": 8}, "params", 1.0, "count", case_size=1,
                   provenance=PROV)
    records.append(extra / "records.jsonl", [other])
    gone = diffbench.compare(extra, base)
    assert gone.failed and [(v.metric, v.verdict) for v in gone.verdicts if v.fails] == [("case", "missing")]
    policy = tmp_path / "p.toml"
    policy.write_text('allow_missing = ["unet-adm@0.7M/b8/*"]\n')
    assert not diffbench.compare(extra, base, policy=policy).failed
    refused = cli("baseline", str(slow), "-o", str(tmp_path / "b.json"))
    assert refused.returncode == 2 and "1 unreadable record line(s)" in refused.stderr
