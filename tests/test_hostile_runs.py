"""Run directories under stress: one writer at a time, resume retries failures, full disks, hostile
records and suite files (fuzzed with hypothesis), and inputs that are odd but valid."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffbench.bench.run_dir import RECORDS, RETRIED
from diffbench.cli import main
from diffbench.core import records
from diffbench.core.errors import UserError
from tests.conftest import ROOT
from tests.test_runner import run

QUICK_RECORDS = ROOT / "tests" / "data" / "quick_before_redesign"
ONE_CASE = """
name = "one"
[defaults]
batch_sizes = [1, 2]
measure = ["counts"]
timeout_s = 60
[[sweeps]]
presets = ["DiT-S/8"]
"""


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# --- one writer per run directory -----------------------------------------------------------------------

def test_a_second_run_on_the_same_directory_exits_2_naming_the_first(tmp_path: Path):
    suite = tmp_path / "one.toml"
    suite.write_text(ONE_CASE)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from diffbench.bench.run_dir import RunLock\n"
        f"with RunLock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)\n")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = run([str(suite), "--out", str(out)])
        one_line_error(proc, "being written by another diffbench run", f"pid {holder.pid}")
        assert not (out / RECORDS).exists()  # the second run measured nothing
        proc = run([str(suite), "--out", str(out), "--resume"])
        one_line_error(proc, f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    proc = run([str(suite), "--out", str(out)])  # the holder is gone: its lock went with it
    assert proc.returncode == 0, proc.stderr
    assert "took over a stale lock" in (out / "run.log").read_text()


def test_two_concurrent_runs_measure_each_case_once(tmp_path: Path):
    suite = tmp_path / "one.toml"
    suite.write_text(ONE_CASE)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "diffbench", "run", str(suite), "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 2)
    assert ("being written by another diffbench run" in loser or "already holds a run" in loser), loser
    got = [(r.case_id, r.metric) for r in records.read(out / RECORDS).records]
    assert len(got) == len(set(got)) == 10  # 2 cases x 5 counts, each once


# --- resume retries what failed ---------------------------------------------------------------------------

def test_resume_retries_failed_cases_unless_keep_failed(tmp_path: Path):
    suite = tmp_path / "one.toml"
    suite.write_text(ONE_CASE)
    out = tmp_path / "run"
    faults = {"DIFFBENCH_INJECT_FAULTS": json.dumps({"*/b1/*": "raise"})}
    assert run([str(suite), "--out", str(out)], faults).returncode == 0
    failed = [r for r in records.read(out / RECORDS).records if r.status == "error"]
    assert len(failed) == 1

    proc = run([str(suite), "--out", str(out), "--resume", "--keep-failed"])
    assert proc.returncode == 0 and "2 already complete" in proc.stdout, proc.stdout
    assert not (out / RETRIED).exists()

    proc = run([str(suite), "--out", str(out), "--resume"])
    assert proc.returncode == 0 and "1 already complete" in proc.stdout and "ok 1" in proc.stdout, proc.stdout
    now = records.read(out / RECORDS).records
    assert all(r.status == "ok" for r in now) and len(now) == 10
    kept = records.read(out / RETRIED).records  # the failed attempt is kept, not lost
    assert [(r.case_id, r.status) for r in kept] == [(failed[0].case_id, "error")]
    assert "retrying 1 failed case(s)" in (out / "run.log").read_text()
    assert "DiT-S/8/b1/fp32" in (out / "run.log").read_text()


# --- paths ---------------------------------------------------------------------------------------------------

def test_records_behind_a_link_are_never_appended_to(tmp_path: Path):
    suite = tmp_path / "one.toml"
    suite.write_text(ONE_CASE)
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("")
    out = tmp_path / "run"
    out.mkdir()
    (out / RECORDS).symlink_to(elsewhere)
    one_line_error(run([str(suite), "--out", str(out), "--resume"]), "not a regular file")
    assert elsewhere.read_text() == ""
    with pytest.raises(OSError):  # the writer itself refuses to follow a link
        records.append(out / RECORDS, records.Record("r", "c", "s", {}, "params", 1.0, "count", case_size=1))
    assert elsewhere.read_text() == ""


def test_a_suite_name_never_leaves_runs(tmp_path: Path, monkeypatch):
    from diffbench.api import default_run_dir

    monkeypatch.chdir(tmp_path)
    odd = tmp_path / "my suite (v2).toml"  # a file stem with spaces becomes a plain name
    odd.write_text(ONE_CASE.replace('name = "one"\n', ""))
    d = default_run_dir(odd)
    assert d.parent == Path("runs") and d.name.startswith("my_suite__v2_-")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "../../escape"\n' + ONE_CASE.replace('name = "one"\n', ""))
    with pytest.raises(UserError, match="plain name"):
        default_run_dir(bad)


# --- atomic outputs under a full disk -------------------------------------------------------------------------

def test_report_under_a_full_disk_leaves_the_previous_report_intact(tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(QUICK_RECORDS, run_dir)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    first = subprocess.run([sys.executable, "-m", "diffbench", "report", str(run_dir)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in (run_dir / "report").rglob("*") if p.is_file()}
    assert (run_dir / "report" / "report.html").stat().st_size > 32 * 1024
    # the file-size limit (32 KiB) stands in for a full disk: the HTML report (with its images) cannot be written
    second = subprocess.run(["bash", "-c", f"ulimit -f 32; exec {sys.executable} -m diffbench report {run_dir}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    one_line_error(second, "report")
    after = {p.name: p.read_bytes() for p in (run_dir / "report").rglob("*") if p.is_file()}
    assert after == before  # every file whole: the previous one, or a complete new one (identical here)
    assert not [p for p in (run_dir / "report").rglob("*.tmp*")]


# --- records: every field checked, bad lines set aside ----------------------------------------------------------

GOOD = json.loads((QUICK_RECORDS / RECORDS).read_text().splitlines()[0])
BAD_FIELDS = [("case_id", ["a", "b"]), ("metric", {"m": 1}), ("config", "a string"), ("value", int("9" * 400)),
              ("value", "12"), ("value", True), ("samples", [1, "x"]), ("samples", [1e999]), ("case_size", -1),
              ("provenance", [1]), ("extra", None), ("status", 3), ("run_id", None)]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}-{type(v).__name__}" for f, v in BAD_FIELDS])
def test_a_record_with_a_field_of_the_wrong_type_is_set_aside(field, value, tmp_path: Path):
    bad = dict(GOOD, **{field: value})
    path = tmp_path / RECORDS
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    got = records.read(path)
    assert len(got.records) == 1 and len(got.problems) == 1 and field in got.problems[0]


def test_deeply_nested_and_corrupt_run_files_are_set_aside(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(QUICK_RECORDS, run_dir)
    with open(run_dir / RECORDS, "a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
        f.write(json.dumps(dict(GOOD, config={"model": "not an object"})) + "\n")
    (run_dir / "device.json").write_text("{ corrupt")
    assert main(["report", str(run_dir), "--format", "md"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffbench: warning: set aside") and "2 more" in err[0], err
    text = (run_dir / "report" / "report.md").read_text()
    assert "nested too deeply" in text and "config.model must be an object" in text and "device.json" in text


def _json_values() -> st.SearchStrategy:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
    return st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                      max_size=3), max_leaves=8)


@st.composite
def _fuzzed_records(draw) -> str:
    lines = (QUICK_RECORDS / RECORDS).read_text().splitlines()[:24]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        choice = draw(st.integers(0, 3))
        try:
            json.loads(lines[i])
        except ValueError:  # a line already cut short or replaced by text: leave it
            continue
        if choice == 0:  # one field replaced by any JSON value
            d = json.loads(lines[i])
            d[draw(st.sampled_from(sorted(d)))] = draw(_json_values())
            lines[i] = json.dumps(d)
        elif choice == 1:  # a nested field of the config replaced
            d = json.loads(lines[i])
            model = d.get("config", {}).get("model") if isinstance(d.get("config"), dict) else None
            if isinstance(model, dict) and model:
                model[draw(st.sampled_from(sorted(model)))] = draw(_json_values())
                lines[i] = json.dumps(d)
        elif choice == 2:  # any text
            lines.insert(i, draw(st.text(max_size=40)).replace("\n", " "))
        else:  # a line cut short
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=_fuzzed_records())
def test_fuzzed_records_never_crash_report_or_resume(text, tmp_path_factory):
    from diffbench.bench.run_dir import complete_cases
    from diffbench.reports.load import load_run, unavailable_reasons
    from diffbench.reports.tables import comparison

    run_dir = tmp_path_factory.mktemp("fuzz")
    (run_dir / RECORDS).write_text(text)
    try:
        complete_cases(run_dir / RECORDS, retry_failed=True)
        data = load_run(run_dir)
        comparison(data.wide, unavailable_reasons(data.long))  # the three per-case tables
    except UserError:
        pass


def test_fuzzed_records_report_end_to_end(tmp_path: Path, capsys):
    """A few fuzzed runs through the whole report (plots and all), in-process: exit 0 or a user error."""
    import random

    lines = (QUICK_RECORDS / RECORDS).read_text().splitlines()
    rng = random.Random(0)
    for k in range(3):
        fuzzed = list(lines)
        for _ in range(6):
            d = json.loads(fuzzed[rng.randrange(len(fuzzed))])
            key = rng.choice(sorted(d))
            d[key] = rng.choice([None, [], {}, "x", -1, 1e308, True, {"model": 3}])
            fuzzed.append(json.dumps(d))
        run_dir = tmp_path / f"r{k}"
        run_dir.mkdir()
        (run_dir / RECORDS).write_text("\n".join(fuzzed) + "\n")
        assert main(["report", str(run_dir), "--format", "md"]) in (0, 2)
        capsys.readouterr()


# --- suites: fuzzed TOML --------------------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def _toml_scalars() -> st.SearchStrategy:
    return (st.booleans() | st.integers(-2, 2 ** 40) | st.floats(allow_nan=True, allow_infinity=True)
            | st.sampled_from(["1M", "0.5M", "nanM", "x", "3x32x32", "DiT-S/8", "dit", "ldm", "fp32", "bf16",
                               "counts", "speed", "digits", "-1", "", "../x"]))


@st.composite
def _fuzzed_suite(draw) -> str:
    from diffbench.bench.suites import SETTING_KEYS, SWEEP_KEYS

    value = _toml_scalars() | st.lists(_toml_scalars(), max_size=3)
    defaults = draw(st.dictionaries(st.sampled_from(sorted(SETTING_KEYS) + ["bogus"]), value, max_size=3))
    sweep = draw(st.dictionaries(st.sampled_from(sorted(SWEEP_KEYS)), value, max_size=4))
    sweep.setdefault("presets", ["DiT-S/8"])  # keep sizing (slow) out of most examples
    text = "[defaults]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in defaults.items())
    return text + "[[sweeps]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in sweep.items())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=_fuzzed_suite() | st.text(max_size=200))
def test_fuzzed_suites_never_crash_a_dry_run(text, tmp_path_factory):
    from diffbench.bench import expansion, suites

    path = tmp_path_factory.mktemp("suite") / "fuzz.toml"
    path.write_text(text)
    with contextlib.suppress(UserError):
        expansion.expand(suites.load(str(path)), "cpu")


# --- odd but valid inputs ---------------------------------------------------------------------------------------

def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_16_bit_images_are_scaled_not_saturated(tmp_path: Path):
    from diffbench.metrics.inputs import batches

    values = np.array([[0, 257 * 10], [257 * 128, 65535]], np.uint16)
    _png(tmp_path / "a" / "0.png", values)
    got = next(batches(tmp_path / "a"))
    assert got.dtype.__str__() == "torch.uint8" and got.shape == (1, 3, 2, 2)
    assert got[0, 0].tolist() == [[0, 10], [128, 255]] and (got[0, 0] == got[0, 2]).all()


def test_odd_but_valid_inputs_work(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    for i in range(3):  # 1x1 images
        _png(tmp_path / "tiny" / f"{i}.png", rng.integers(0, 256, (1, 1, 3), dtype=np.uint8))
    assert main(["fid", str(tmp_path / "tiny"), str(tmp_path / "tiny"), "--detector", "digits"]) == 0
    assert "fid" in capsys.readouterr().out
    _png(tmp_path / "one" / "0.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))  # a single image
    captions = tmp_path / "c.txt"
    captions.write_text("A SMALL RED CIRCLE\u00a0AT THE\u2003CENTER.\n")  # unicode spaces, capitals
    assert main(["clip-score", str(tmp_path / "one"), str(captions), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1


def test_fid_of_two_plain_statistics_files_needs_no_detector(tmp_path: Path, monkeypatch, capsys):
    """ADM / clean-fid reference files hold only mu and sigma: FID needs no Inception weights for them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights-here"))
    monkeypatch.setenv("HOME", str(tmp_path))
    d = 3
    np.savez(tmp_path / "a.npz", mu=np.zeros(d), sigma=np.eye(d))
    np.savez(tmp_path / "b.npz", mu=np.ones(d), sigma=np.eye(d))
    assert main(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fid"] == pytest.approx(3.0) and out["detector"] is None and out["verified"] is None
    assert "no detector identity" in out["note"]
    assert main(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 0
    assert "note: " in capsys.readouterr().out


def test_an_orphaned_case_process_exits_quietly(monkeypatch, capfd):
    """The parent died: the case's result has nowhere to go, and that is not worth a traceback."""
    import multiprocessing as mp

    from diffbench.bench import cases, runner

    monkeypatch.setattr(cases, "execute", lambda *a, **k: [])
    recv, send = mp.Pipe(duplex=False)
    recv.close()  # the parent's end is gone
    runner._child({}, "run", "suite", "case", "name", send)
    assert "Traceback" not in capfd.readouterr().err


def test_time_of_a_held_lock_is_reported(tmp_path: Path):
    from diffbench.bench.run_dir import RunLock

    with RunLock(tmp_path) as lock:
        assert lock.fd is not None
        holder = json.loads((tmp_path / RunLock.NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).__enter__()
    assert (tmp_path / RunLock.NAME).read_text() == ""  # released: no holder named
