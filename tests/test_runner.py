"""The runner: faults in a case become one status row; SIGKILL + --resume loses and duplicates nothing."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from diffbench.bench.run_dir import PARTIAL, RECORDS, complete_cases
from diffbench.core import records
from tests.conftest import ROOT, call_cli

SUITE = """
name = "t"
[defaults]
batch_sizes = [1, 2, 3, 4, 5]
measure = ["counts"]
timeout_s = 60
[[sweeps]]
presets = ["DiT-S/8"]
"""


def run(args, env_extra=None, timeout=300):
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "diffbench", "run", *args, "--no-progress"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def pairs(path: Path) -> list[tuple[str, str]]:
    return [(r.case_id, r.metric) for r in records.read(path).records]


def test_faults_are_status_rows_and_the_sweep_goes_on(tmp_path: Path):
    suite = tmp_path / "t.toml"
    suite.write_text(SUITE)
    faults = {"*/b1/*": "raise", "*/b2/*": "abort", "*/b3/*": "hang", "*/b4/*": "oom"}
    out = tmp_path / "run"
    # on two CPU workers: the hang waits out its timeout while the other cases run (and faults stay isolated there)
    proc = run([str(suite), "--out", str(out), "--timeout", "20", "--devices", "cpu,cpu"],
               {"DIFFBENCH_INJECT_FAULTS": json.dumps(faults)})
    assert proc.returncode == 0, proc.stderr
    got = records.read(out / RECORDS).records
    by_batch: dict[int, list] = {}
    for r in got:
        by_batch.setdefault(r.config["batch_size"], []).append(r)
    expected = {1: "error", 2: "crash", 3: "timeout", 4: "oom"}
    for batch, status in expected.items():
        rows = by_batch[batch]
        assert len(rows) == 1 and rows[0].status == status and rows[0].value is None, (batch, rows)
        assert rows[0].metric == "case" and rows[0].error
        assert rows[0].provenance["recorded_at"] and rows[0].provenance["device_name"]
        assert rows[0].provenance["precision"]["precision"] == "fp32"
    assert "injected fault: raise" in by_batch[1][0].error
    assert "out of memory" in by_batch[4][0].error.lower()
    ok = by_batch[5]  # the case after the faults ran normally
    assert {r.metric for r in ok} == {"params", "params_trainable", "model_bytes", "gmacs", "flops"}
    assert all(r.status == "ok" for r in ok) and ok[0].value == 33_148_160
    assert "ok 1" in proc.stdout and "timeout 1" in proc.stdout
    assert (out / "run.log").read_text().count("injected fault") >= 1
    assert json.loads((out / "suite.resolved.json").read_text())["cases"][0]["name"] == "DiT-S/8/b1/fp32"
    assert {r.provenance["placement"]["launcher"] for r in got} == {"devices"}


# 40 s: slow. The default run keeps what it proves in parts: a torn case moved aside and rerun
# (test_resume_moves_a_partial_case_aside_and_reruns_it), a SIGKILLed training case resumed to the uninterrupted
# curve (test_training_sampling, test_resume_training), killed latents resumed byte for byte (test_latents), and
# two concurrent runs measuring each case once (test_hostile_runs)
@pytest.mark.slow
def test_sigkill_then_resume_gives_exactly_the_uninterrupted_records(tmp_path: Path):
    suite = tmp_path / "t.toml"
    suite.write_text(SUITE)
    clean = tmp_path / "clean"
    assert run([str(suite), "--out", str(clean)]).returncode == 0
    reference = pairs(clean / RECORDS)
    assert len(reference) == 5 * 5 and len(set(reference)) == len(reference)

    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    resume: list[str] = []
    # kill at several points of the sweep, each run resuming the last; the later ones on two CPU workers
    # (--devices cpu,cpu), whose concurrent cases must lose and duplicate nothing either
    for delay, workers in ((3.0, []), (4.5, ["--devices", "cpu,cpu"]), (6.0, ["--devices", "cpu,cpu"])):
        p = subprocess.Popen([sys.executable, "-m", "diffbench", "run", str(suite), "--out", str(out), "--no-progress",
                              *resume, *workers], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)  # the runner and its case process, no clean-up
        p.wait()
        resume = ["--resume"]
    final = run([str(suite), "--out", str(out), "--resume", "--devices", "cpu,cpu"])
    assert final.returncode == 0, final.stderr
    got = pairs(out / RECORDS)
    assert Counter(got) == Counter(reference)  # same pairs, no duplicates, nothing lost
    assert not records.read(out / RECORDS).unreadable


def test_resume_moves_a_partial_case_aside_and_reruns_it(tmp_path: Path):
    suite = tmp_path / "t.toml"
    suite.write_text(SUITE.replace("[1, 2, 3, 4, 5]", "[1, 2]"))
    out = tmp_path / "run"
    assert run([str(suite), "--out", str(out), "--devices", "cpu,cpu"]).returncode == 0
    lines = (out / RECORDS).read_text().splitlines()
    assert len(lines) == 10
    # simulate a writer killed after 2 of the second case's 5 lines, the last one torn
    (out / RECORDS).write_text("\n".join(lines[:7]) + "\n" + lines[7][:30])
    done, keep, partial, _ = complete_cases(out / RECORDS)
    assert len(done) == 1 and len(keep) == 5 and len(partial) == 3
    proc = run([str(suite), "--out", str(out), "--resume"])
    assert proc.returncode == 0 and "1 already complete" in proc.stdout
    assert len(pairs(out / RECORDS)) == 10 and len(set(pairs(out / RECORDS))) == 10
    assert len((out / PARTIAL).read_text().splitlines()) == 3  # kept, not lost


def test_existing_run_dir_needs_resume(tmp_path: Path):
    suite = tmp_path / "t.toml"
    suite.write_text(SUITE.replace("[1, 2, 3, 4, 5]", "[1]"))
    out = tmp_path / "run"
    assert run([str(suite), "--out", str(out)]).returncode == 0
    proc = call_cli("run", str(suite), "--out", str(out), "--no-progress")  # refused before any case: in process
    assert proc.returncode == 2 and "add --resume" in proc.stderr


def test_oom_on_gpu_retries_at_half_the_batch(tmp_path: Path, monkeypatch):
    from diffbench.bench import expansion, suites
    from diffbench.bench.runner import Runner

    suite_file = tmp_path / "t.toml"
    suite_file.write_text(SUITE.replace("[1, 2, 3, 4, 5]", "[8]"))
    suite = suites.load(str(suite_file))
    case = expansion.expand(suite, "cpu")[0]
    gpu_case = expansion.Case(case.name, dataclasses.replace(case.spec, device="cuda:0"))
    runner = Runner(suite, [gpu_case], tmp_path / "run", progress=False)
    (tmp_path / "run").mkdir()
    tried = []

    def fake_spawn(case, spec, timeout):
        tried.append(spec.batch_size)
        if spec.batch_size > 2:
            return "oom", "CUDA out of memory"
        rec = records.Record("r", case.case_id, "t", spec.to_json(), "params", 1.0, "count", case_size=1)
        return "ok", [rec.to_json()]

    monkeypatch.setattr(runner.executor, "_spawn", fake_spawn)
    assert runner.run_case(gpu_case) == ["ok"]
    assert tried == [8, 4, 2]
    rec = records.read(tmp_path / "run" / RECORDS).records[0]
    assert rec.config["batch_size"] == 2 and rec.config["oom_retry_from"] == 8 and rec.case_id == gpu_case.case_id


def test_repetitions_run_in_fresh_processes_and_merge(tmp_path: Path):
    suite = tmp_path / "t.toml"
    suite.write_text(SUITE.replace("batch_sizes = [1, 2, 3, 4, 5]", "batch_sizes = [1, 2]\nrepetitions = 2")
                     .replace('measure = ["counts"]', 'measure = ["counts", "memory"]'))
    out = tmp_path / "run"
    proc = run([str(suite), "--out", str(out)], {"DIFFBENCH_INJECT_FAULTS": json.dumps({"*/b2/*": "raise"})})
    assert proc.returncode == 0, proc.stderr
    got = records.read(out / RECORDS).records
    ok = [r for r in got if r.config["batch_size"] == 1]
    assert len({r.metric for r in ok}) == len(ok)  # one record per metric, not one per repetition
    rss = next(r for r in ok if r.metric == "cpu_peak_rss_bytes")
    assert len(rss.extra.get("repetitions", [rss.value, rss.value])) == 2
    failed = [r for r in got if r.config["batch_size"] == 2]
    assert len(failed) == 1 and failed[0].status == "error" and "repetition 1 of 2" in failed[0].error
    assert "from 2 repetitions" in (out / "run.log").read_text()
