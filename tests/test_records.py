import json
import multiprocessing as mp
from pathlib import Path

import pytest

from diffbench.bench.provenance import collect
from diffbench.core import records
from diffbench.core.errors import BadInputError
from diffbench.core.records import Record


def rec(i: int, **kw) -> Record:
    base = dict(run_id="r1", case_id=f"c{i}", suite="smoke", config={"model": "DiT-S/2", "batch": 2},
                metric="latency_ms", value=float(i) + 0.5, unit="ms", samples=[1.0, 2.0])
    base.update(kw)
    return Record(**base)


def test_round_trip_preserves_every_field(tmp_path: Path):
    p = tmp_path / "records.jsonl"
    r = records.stamp(rec(1, extra={"detector": "x"}), collect(seed=3))
    records.append(p, r)
    records.append(p, [rec(2), rec(3, status="oom", value=None, error="CUDA out of memory")])
    got = records.read(p)
    assert got.problems == []
    assert got.records[0] == r
    assert [x.case_id for x in got.records] == ["c1", "c2", "c3"]
    assert got.records[2].status == "oom" and got.records[2].value is None
    prov = got.records[0].provenance
    for key in ("git_commit", "git_dirty", "diffbench_version", "torch_version", "cuda_version", "driver_version",
                "python_version", "device_name", "host", "precision", "seed", "started_at", "recorded_at"):
        assert key in prov
    assert prov["seed"] == 3 and prov["recorded_at"]
    first = json.loads(p.read_text().splitlines()[0])
    assert list(first)[0] == "schema_version"


def test_torn_last_line_is_reported_and_the_rest_kept(tmp_path: Path):
    p = tmp_path / "records.jsonl"
    records.append(p, [rec(1), rec(2)])
    with open(p, "a") as f:
        f.write(rec(3).to_json()[:40])  # a writer killed mid-line
    got = records.read(p)
    assert [r.case_id for r in got.records] == ["c1", "c2"]
    assert len(got.problems) == 1 and "torn last line" in got.problems[0] and ":3:" in got.problems[0]
    # the next append starts a fresh line: the torn fragment stays isolated, nothing else is lost
    records.append(p, rec(4))
    got = records.read(p)
    assert [r.case_id for r in got.records] == ["c1", "c2", "c4"]
    assert len(got.problems) == 1 and "unreadable line" in got.problems[0]


def test_newer_schema_version_is_refused(tmp_path: Path):
    p = tmp_path / "records.jsonl"
    records.append(p, rec(1))
    d = json.loads(rec(2).to_json())
    d["schema_version"] = records.SCHEMA_VERSION + 1
    with open(p, "a") as f:
        f.write(json.dumps(d) + "\n")
    with pytest.raises(BadInputError, match="newer than this diffbench"):
        records.read(p)


def test_missing_file_is_a_user_error(tmp_path: Path):
    with pytest.raises(BadInputError, match="no records file"):
        records.read(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("bad", [dict(status="weird"), dict(value="12"), dict(value=float("nan")),
                                 dict(status="error", value=1.0), dict(value=True)])
def test_invalid_records_are_rejected(bad):
    with pytest.raises((ValueError, TypeError)):
        rec(1, **bad)


def _writer(path: str, who: int, n: int) -> None:
    big = {"blob": "x" * 5000}  # lines far larger than PIPE_BUF, so only the lock keeps them whole
    for i in range(n):
        records.append(path, rec(i, case_id=f"w{who}-{i}", extra=big))


def test_concurrent_appends_from_two_processes_leave_no_broken_line(tmp_path: Path):
    p = str(tmp_path / "records.jsonl")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(p, w, 150)) for w in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    got = records.read(p)
    assert got.problems == []
    ids = sorted(r.case_id for r in got.records)
    assert ids == sorted(f"w{w}-{i}" for w in range(2) for i in range(150))


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_the_writer_refuses_non_finite_numbers_anywhere_property(tmp_path):
    """Whatever nests a NaN or an infinity (config, extra, provenance; plain floats or numpy scalars), the writer
    refuses the record and writes nothing; every line it does write is strict JSON."""
    import math

    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=5),
                       st.floats(allow_nan=True, allow_infinity=True),
                       st.floats(allow_nan=True, allow_infinity=True).map(np.float64))
    trees = st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                         st.dictionaries(st.text(max_size=4), kids, max_size=3)),
                         max_leaves=8)

    def finite(x) -> bool:
        if isinstance(x, dict):
            return all(map(finite, x.values()))
        if isinstance(x, list):
            return all(map(finite, x))
        return not isinstance(x, (float, np.floating)) or math.isfinite(x)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(config=trees, extra=trees, prov=trees)
    def check(config, extra, prov):
        path = tmp_path / "r.jsonl"
        path.unlink(missing_ok=True)
        rec = Record("r", "c", "s", {"x": config}, "params", 1.0, "count", extra={"x": extra},
                     provenance={"x": prov})
        if finite(config) and finite(extra) and finite(prov):
            records.append(path, rec)
            [line] = path.read_text().splitlines()
            assert _strict(line)["metric"] == "params"
        else:
            with pytest.raises(ValueError, match="a NaN or infinite number in"):
                records.append(path, [Record("r", "c0", "s", {}, "params", 1.0, "count"), rec])
            assert not path.exists() or path.read_text() == ""  # not even the good record before it

    check()


def test_benchmark_module_takes_the_run_lock_and_refuses_non_finite_settings(tmp_path):
    import torch

    import diffbench
    from diffbench.bench.run_dir import RunLock

    model = torch.nn.Linear(4, 4)

    def inputs(b, device, dtype):
        return {"input": torch.randn(b, 4, device=device, dtype=dtype)}

    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run"), pytest.raises(diffbench.UserError, match="being written by another"):
        diffbench.benchmark_module(model, inputs=inputs, out=tmp_path / "run", device="cpu", repeats=2)
    assert not (tmp_path / "run" / "records.jsonl").exists()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(diffbench.UserError, match="min_time_s: expected a non-negative number"):
            diffbench.benchmark_module(model, inputs=inputs, out=tmp_path / f"x{bad}", device="cpu", min_time_s=bad)
        assert not (tmp_path / f"x{bad}").exists()
