"""``diffbench compare`` and ``diffbench baseline``: the CI regression gate, judged by metric kind."""

import json
import random
from pathlib import Path

import pytest

from diffbench.core import records
from diffbench.core.records import Record

PROV = {"git_commit": "abc", "git_dirty": False, "diffbench_version": "0.1.0", "torch_version": "2.14.1",
        "cuda_version": None, "driver_version": None, "device_name": "Test CPU", "python_version": "3.11"}


def write_run(d: Path, scale: float = 1.0, seed: int = 0, n: int = 20, gmacs: float = 0.25,
              broken: str | None = None, prov: dict | None = None, fid: float = 40.0) -> Path:
    """Three cases: latency samples with 3% noise (median 10/20/30 ms x scale), exact counts, memory, a FID."""
    rng = random.Random(seed)
    recs = []
    for k, label in enumerate(("dit@1M", "uvit@1M", "unet-adm@1M"), start=1):
        cid = f"case{k:012d}"
        config = {"model": {"label": label, "family": label.split("@")[0]}, "batch_size": 4, "precision": "fp32",
                  "device": "cpu"}
        if broken == label:
            recs.append(Record("r", cid, "t", config, "case", None, "", status="error", error="RuntimeError: boom",
                               case_size=1, provenance=prov or PROV))
            continue
        samples = [10.0 * k * scale * rng.gauss(1, 0.03) for _ in range(n)]
        med = sorted(samples)[n // 2]
        rows = [("params", 1e6, "count", None), ("gmacs", gmacs, "GMAC", None), ("latency_ms", med, "ms", samples),
                ("throughput_img_s", 4 / (med / 1e3), "images/s", None),
                ("cpu_peak_rss_bytes", 1e9, "bytes", None), ("fid[digits]", fid, "1", None)]
        for metric, value, unit, s in rows:
            recs.append(Record("r", cid, "t", config, metric, value, unit, samples=s, case_size=len(rows),
                               provenance=prov or PROV))
    d.mkdir(parents=True)
    records.append(d / "records.jsonl", recs)
    return d


def verdicts(out: str) -> dict[tuple[str, str], str]:
    return {(v["case"], v["metric"]): v["verdict"] for v in json.loads(out)["verdicts"]}


def test_same_distribution_is_no_regression(tmp_path, cli):
    a, b = write_run(tmp_path / "a", seed=1), write_run(tmp_path / "b", seed=2)
    p = cli("compare", str(a), str(b), "--format", "json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert set(verdicts(p.stdout).values()) == {"same"}


@pytest.mark.parametrize(("scale", "flagged"), [(1.10, True), (1.02, False), (0.85, False)])
def test_scaled_latency_is_flagged_on_every_timed_case_only_beyond_the_threshold(tmp_path, cli, scale, flagged):
    a, b = write_run(tmp_path / "a", seed=1), write_run(tmp_path / "b", seed=1, scale=scale)
    p = cli("compare", str(a), str(b), "--format", "json")
    v = verdicts(p.stdout)
    lat = {case: v[(case, "latency_ms")] for case, m in v if m == "latency_ms"}
    assert len(lat) == 3
    if flagged:
        assert p.returncode == 1 and set(lat.values()) == {"regression"}
    else:
        assert p.returncode == 0 and set(lat.values()) <= {"same", "improvement"}
    if scale < 1:
        assert set(lat.values()) == {"improvement"}


def test_too_few_samples_is_inconclusive_not_a_pass(tmp_path, cli):
    a, b = write_run(tmp_path / "a", seed=1, n=3), write_run(tmp_path / "b", seed=1, n=3, scale=1.2)
    p = cli("compare", str(a), str(b), "--format", "json")
    v = json.loads(p.stdout)["verdicts"]
    lat = [x for x in v if x["metric"] == "latency_ms"]
    assert {x["verdict"] for x in lat} == {"inconclusive"} and "too few samples" in lat[0]["note"]
    assert p.returncode == 0
    assert cli("compare", str(a), str(b), "--fail-on-inconclusive").returncode == 1


def test_changed_exact_count_fails_unless_allowed(tmp_path, cli):
    a, b = write_run(tmp_path / "a", seed=1), write_run(tmp_path / "b", seed=1, gmacs=0.26)
    p = cli("compare", str(a), str(b))
    assert p.returncode == 1 and "changed" in p.stdout and "REGRESSION" in p.stdout
    assert cli("compare", str(a), str(b), "--allow-change", "gmacs").returncode == 0


def test_a_case_that_breaks_is_a_regression_and_quality_compares_exactly_on_cpu(tmp_path, cli):
    a = write_run(tmp_path / "a", seed=1)
    b = write_run(tmp_path / "b", seed=1, broken="uvit@1M")
    p = cli("compare", str(a), str(b), "--format", "json")
    assert p.returncode == 1 and verdicts(p.stdout)[("uvit@1M/b4/fp32", "case")] == "broken"
    c = write_run(tmp_path / "c", seed=1, fid=40.5)
    p = cli("compare", str(a), str(c), "--format", "json")
    assert p.returncode == 1 and verdicts(p.stdout)[("dit@1M/b4/fp32", "fid[digits]")] == "regression"
    p = cli("compare", str(c), str(a), "--format", "json")
    assert p.returncode == 0 and verdicts(p.stdout)[("dit@1M/b4/fp32", "fid[digits]")] == "improvement"


def test_environment_differences_are_refused_unless_allowed(tmp_path, cli):
    a = write_run(tmp_path / "a", seed=1)
    b = write_run(tmp_path / "b", seed=1, prov={**PROV, "torch_version": "2.15.0"})
    p = cli("compare", str(a), str(b))
    assert p.returncode == 2 and "torch_version" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert cli("compare", str(a), str(b), "--allow-env-change").returncode == 0


def test_baseline_round_trip_and_markdown(tmp_path, cli):
    a, b = write_run(tmp_path / "a", seed=1), write_run(tmp_path / "b", seed=1, scale=1.10)
    base = tmp_path / "baselines" / "t.json"
    assert cli("baseline", str(a), "-o", str(base)).returncode == 0
    assert base.stat().st_size < (a / "records.jsonl").stat().st_size
    assert cli("compare", str(base), str(a)).returncode == 0  # a run equals its own baseline
    p = cli("compare", str(base), str(b), "--format", "md", "--github-benchmark", str(tmp_path / "gab"))
    assert p.returncode == 1 and p.stdout.startswith("### diffbench compare: REGRESSION")
    smaller = json.loads((tmp_path / "gab" / "smaller.json").read_text())
    assert {"name", "unit", "value"} <= set(smaller[0]) and any("latency_ms" in e["name"] for e in smaller)


def test_policy_thresholds_apply(tmp_path, cli):
    a, b = write_run(tmp_path / "a", seed=1), write_run(tmp_path / "b", seed=1, scale=1.10)
    policy = tmp_path / "p.toml"
    policy.write_text('threshold = 0.2\n[[cases]]\nglob = "unet*"\nthreshold = 0.05\n')
    v = verdicts(cli("compare", str(a), str(b), "--policy", str(policy), "--format", "json").stdout)
    lat = {c: x for (c, m), x in v.items() if m == "latency_ms"}
    assert sorted(x for c, x in lat.items() if c.startswith("unet")) == ["regression"]
    assert {x for c, x in lat.items() if not c.startswith("unet")} <= {"same", "inconclusive"}


@pytest.mark.parametrize(("args", "message"), [
    (["nothing", "nothing2"], "no such run directory"),
    (["{a}", "{bad}"], "not a diffbench baseline"),
    (["{a}", "{other}"], "share no case"),
    (["{a}", "{a}", "--policy", "{badpolicy}"], "unknown key"),
    (["{a}", "{a}", "--policy", "{nanpolicy}"], "not a readable policy TOML"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, cli, args, message):
    a = write_run(tmp_path / "a")
    (tmp_path / "bad.json").write_text('{"x": 1}')
    other = tmp_path / "other"
    other.mkdir()
    records.append(other / "records.jsonl", Record("r", "zzz", "u", {}, "params", 1.0, "count", case_size=1))
    (tmp_path / "bad.toml").write_text("thresold = 0.1\n")
    (tmp_path / "nan.toml").write_text("threshold = [\n")
    paths = {"a": a, "bad": tmp_path / "bad.json", "other": other, "badpolicy": tmp_path / "bad.toml",
             "nanpolicy": tmp_path / "nan.toml"}
    p = cli("compare", *[x.format(**paths) for x in args])
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def scaled_copy(src: Path, dst: Path, factor: float) -> Path:
    """A copy of a real run with every raw latency sample (and its median) multiplied by ``factor``."""
    import dataclasses

    got = records.read(src / "records.jsonl").records
    out = []
    for r in got:
        if r.metric.startswith("latency_ms") and r.samples:
            extra = dict(r.extra)
            if "repetitions" in extra:  # the per-process medians of a suite with repetitions
                extra["repetitions"] = [x * factor for x in extra["repetitions"]]
            r = dataclasses.replace(r, value=r.value * factor, samples=[x * factor for x in r.samples], extra=extra)
        out.append(r)
    dst.mkdir()
    records.append(dst / "records.jsonl", out)
    return dst


@pytest.mark.slow
def test_real_ci_cpu_run_against_scaled_copies(tmp_path, cli):
    run = tmp_path / "run"
    assert cli("run", "ci-cpu", "--out", str(run), "--device", "cpu", "--no-progress", timeout=900).returncode == 0
    timed = {r.case_id for r in records.read(run / "records.jsonl").records if r.metric == "latency_ms"}
    # ci-cpu has repetitions: the test runs on 4 per-process medians a side. +10% is flagged on every timed
    # case: a regression where the processes' spread allows the call, else "inconclusive" (never "same");
    # +2% is below the threshold: flagged on none
    for factor, expect in ((1.10, {"regression", "inconclusive"}), (1.02, {"same"})):
        copy = scaled_copy(run, tmp_path / f"x{factor}", factor)
        p = cli("compare", str(run), str(copy), "--format", "json", "--allow-env-change")
        lat = [v["verdict"] for v in json.loads(p.stdout)["verdicts"] if v["metric"] == "latency_ms"]
        assert len(lat) == len(timed) and set(lat) <= expect, lat
        assert p.returncode == (1 if "regression" in lat else 0)


def test_history_marks_the_run_where_latency_moved(tmp_path, cli):
    runs = tmp_path / "nightly"
    for i, scale in enumerate((1.0, 1.0, 1.0, 1.25, 1.25, 1.25)):
        prov = {**PROV, "git_commit": f"c{i:07d}", "started_at": f"2026-12-0{i + 1}T00:00:00+00:00"}
        write_run(runs / f"run{i}", scale=scale, seed=i, prov=prov)
    p = cli("report", str(runs))
    assert p.returncode == 0, p.stderr
    text = (runs / "history" / "history.md").read_text()
    rows = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): line for line in text.splitlines()
            if line.startswith("| ") and "latency_ms" in line}
    assert len(rows) == 3 and all("run3 (c0000003): +2" in r for r in rows.values()), rows
    params = next(line for line in text.splitlines() if "| params |" in line)
    assert params.rstrip(" |").endswith("-")  # an exact count that never moved has no change point
    assert (runs / "history" / "plots" / "history_latency_ms.png").is_file()


def test_a_baseline_with_nan_samples_is_refused(tmp_path, cli):
    a = write_run(tmp_path / "a", seed=1)
    base = tmp_path / "b.json"
    assert cli("baseline", str(a), "-o", str(base)).returncode == 0
    doc = json.loads(base.read_text())
    doc["cases"][0]["metrics"][2]["samples"][0] = float("nan")
    base.write_text(json.dumps(doc))  # json writes NaN, as a hand-edited or corrupted file may hold
    p = cli("compare", str(base), str(a))
    assert p.returncode == 2 and "samples must be a list of finite numbers" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def _rep_run(d: Path, reps: list[float], seed: int = 0) -> Path:
    """One timed case measured in len(reps) processes: each process's samples spread 2% around its median."""
    rng = random.Random(seed)
    per = [[m * rng.gauss(1, 0.02) for _ in range(10)] for m in reps]
    config = {"model": {"label": "dit@1M", "family": "dit"}, "batch_size": 4, "precision": "fp32", "device": "cpu"}
    rec = Record("r", "case000000000001", "t", config, "latency_ms", sorted(reps)[len(reps) // 2], "ms",
                 samples=[x for p in per for x in p], extra={"repetitions": reps}, case_size=1, provenance=PROV)
    d.mkdir(parents=True)
    records.append(d / "records.jsonl", [rec])
    return d


def test_repetitions_are_the_unit_of_the_timing_test(tmp_path, cli):
    """Process-to-process noise (here +-20%, as this CPU shows) is not a regression; a shift of every process is."""
    base = _rep_run(tmp_path / "a", [40.0, 51.0, 42.0, 54.0], seed=1)
    noisy = _rep_run(tmp_path / "b", [52.0, 41.0, 55.0, 44.0], seed=2)  # another 4 processes, same code
    p = cli("compare", str(base), str(noisy), "--format", "json")
    v = json.loads(p.stdout)["verdicts"][0]
    assert p.returncode == 0 and v["verdict"] in ("same", "inconclusive") and "4 vs 4 repetitions" in v["note"], v
    slow = _rep_run(tmp_path / "c", [60.0, 66.0, 63.0, 70.0], seed=3)  # every process slower
    p = cli("compare", str(base), str(slow), "--format", "json")
    v = json.loads(p.stdout)["verdicts"][0]
    assert p.returncode == 1 and v["verdict"] == "regression" and v["p_value"] < 0.05, v


def test_merge_of_repetitions():
    from diffbench.bench.repetitions import RepetitionMismatch, merge

    def rec(metric, value, samples=None, status="ok"):
        return Record("r", "c", "t", {}, metric, value, "ms", status=status, samples=samples, case_size=3,
                      error=None if status == "ok" else "n/a")

    reps = [[rec("params", 1e6), rec("latency_ms", m, [m - 1, m, m + 1]), rec("mfu", None, status="unsupported")]
            for m in (10.0, 14.0, 11.0)]
    got = {r.metric: r for r in merge(reps)}
    assert got["params"].value == 1e6 and "repetitions" not in got["params"].extra  # equal everywhere: as is
    assert got["latency_ms"].value == 11.0 and got["latency_ms"].extra["repetitions"] == [10.0, 14.0, 11.0]
    assert len(got["latency_ms"].samples) == 9  # every raw sample kept
    assert got["mfu"].status == "unsupported"
    with pytest.raises(RepetitionMismatch):
        merge([[rec("params", 1.0)], [rec("gmacs", 1.0)]])
