"""Scale-out: --devices workers, the submitit launcher (its local executor here) and the Ray launcher give
the records a serial run gives; crashes, cancelled jobs and a killed driver end, after --resume, with every
case recorded once."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from diffbench.bench.run_dir import RECORDS
from diffbench.core import records
from tests.conftest import ROOT

SUITE = """
name = "six"
[defaults]
batch_sizes = [1, 2, 3, 4, 5, 6]
measure = ["counts"]
timeout_s = 120
[[sweeps]]
presets = ["DiT-S/8"]
"""


def start(args, env_extra=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "diffbench", "run", *args, "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(predicate, timeout=120.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def case_rows(path: Path):
    """case id -> statuses of its records (one entry per record line)."""
    rows: dict[str, list[str]] = {}
    for r in records.read(path).records:
        rows.setdefault(r.case_id, []).append(r.status)
    return rows


def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "six.toml"
    path.write_text(SUITE)
    return path


def test_devices_cpu_cpu_gives_the_serial_records_on_two_workers(tmp_path: Path):
    """The records a serial run gives (every case, its four counts; the SIGKILL test in test_runner.py compares
    a resumed run on two workers with a serial run record by record), from both workers, each given half the
    cores."""
    import diffbench

    suite = suite_file(tmp_path)
    par = tmp_path / "par"
    code, out, err = finish(start([str(suite), "--out", str(par), "--devices", "cpu,cpu", "--only", "*/b[1-3]/*"]))
    assert code == 0, err
    got = records.read(par / RECORDS)
    assert not got.unreadable
    planned = {c.case_id for c in diffbench.plan(str(suite), "cpu", "*/b[1-3]/*")}
    want = sorted((cid, m) for cid in planned for m in ("flops", "gmacs", "model_bytes", "params", "params_trainable"))
    assert sorted((r.case_id, r.metric) for r in got.records) == want
    workers = {r.provenance["placement"]["worker"] for r in got.records}
    assert workers == {0, 1}  # both workers ran cases
    assert all(r.provenance["placement"]["threads"] == max(1, (os.cpu_count() or 1) // 2) for r in got.records)
    log = (par / "run.log").read_text()
    assert "on 2 workers (cpu,cpu)" in log


def test_devices_are_validated(cli, tmp_path: Path):
    import diffbench
    from diffbench.core.errors import UserError

    suite = suite_file(tmp_path)
    for bad, says in (("cpu,0", "mixes cpu and CUDA"), ("0,0", "twice"), ("x", "neither cpu nor"), (",", "expected")):
        with pytest.raises(UserError, match=says):
            diffbench.run(str(suite), tmp_path / "o", devices=bad)
    big = tmp_path / "big.toml"
    big.write_text(SUITE.replace("timeout_s = 120", "timeout_s = 120\ndevices_per_case = 3"))
    with pytest.raises(UserError, match="needs 3 devices"):
        diffbench.run(str(big), tmp_path / "o2", devices="cpu,cpu")
    with pytest.raises(UserError, match="is for the local launcher"):
        diffbench.run(str(suite), tmp_path / "o4", devices="cpu,cpu", launcher="submitit")
    proc = cli("run", str(suite), "--out", str(tmp_path / "o3"), "--devices", "cpu,x")  # the CLI: one line, exit 2
    assert proc.returncode == 2 and "neither cpu nor" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("run", str(suite), "--out", str(tmp_path / "o3"), "--partition", "gpu")
    assert proc.returncode == 2 and "--launcher submitit or ray" in proc.stderr


def test_the_scheduler_runs_one_case_per_worker_and_waits_for_devices_per_case(tmp_path: Path, monkeypatch):
    """Two workers: at most two cases at once; a case holding both devices runs alone; every case's process
    environment names its own devices; records of concurrent cases are appended whole."""
    import threading

    from diffbench.bench import expansion, suites
    from diffbench.bench.placement import ENV, parse_devices
    from diffbench.bench.runner import CaseExecutor, Runner

    path = tmp_path / "t.toml"
    path.write_text(SUITE + '[[sweeps]]\npresets = ["DiT-S/4"]\ndevices_per_case = 2\nbatch_sizes = [1]\n')
    suite = suites.load(str(path))
    cases = expansion.expand(suite, "cpu")
    running: list[str] = []
    peak: list[int] = []
    overlaps: list[str] = []
    seen: dict[str, list[str]] = {}
    lock = threading.Lock()

    def fake_execute(self, case):
        with lock:
            running.append(case.name)
            peak.append(len(running))
            seen[case.name] = json.loads(self.env[ENV])["devices"]
        time.sleep(0.05)
        with lock:
            if "DiT-S/4" in case.name and len(running) > 1:
                overlaps.append(case.name)
            running.remove(case.name)
        return [records.Record(self.run_id, case.case_id, suite.name, case.spec.to_json(), f"m{k}", 1.0, "count",
                               case_size=20) for k in range(20)]

    monkeypatch.setattr(CaseExecutor, "execute", fake_execute)
    (tmp_path / "run").mkdir()
    runner = Runner(suite, cases, tmp_path / "run", progress=False, devices=parse_devices("cpu,cpu"))
    summary = runner.run()
    assert dict(summary.statuses) == {"ok": 7} and max(peak) == 2 and not overlaps
    assert seen["DiT-S/4/b1/fp32"] == ["cpu", "cpu"] and all(len(v) == 1 for k, v in seen.items() if "S/8" in k)
    got = records.read(tmp_path / "run" / RECORDS)
    assert not got.unreadable and len(got.records) == 7 * 20
    order = [r.case_id for r in got.records]
    assert all(order[i] == order[i - i % 20] for i in range(len(order)))  # each case's 20 lines together


def _submitit_or_skip():
    return pytest.importorskip("submitit", reason="the submitit launcher's tests need pip install -e .[slurm]")


def test_submitit_crash_cancel_and_a_killed_driver_end_with_every_case_once(tmp_path: Path):
    """6 cases: one raises (error), one is cancelled mid-run; the driver is killed while cases run. After
    --resume: 5 ok and 1 error, and no case that had finished ran again."""
    _submitit_or_skip()
    from diffbench.bench.launchers.jobs import read_index
    from diffbench.bench.launchers.submitit_launcher import cancel_local

    suite = suite_file(tmp_path)
    out = tmp_path / "run"
    faults = {"DIFFBENCH_INJECT_FAULTS": json.dumps({"*/b2/*": "raise", "*/b4/*": "hang"})}
    driver = start([str(suite), "--out", str(out), "--launcher", "submitit", "--max-parallel", "3"], faults)
    b4 = lambda: next((e for e in read_index(out).values() if "/b4/" in e["name"]), None)  # noqa: E731
    wait_for(lambda: b4() is not None, what="b4's job")
    time.sleep(3)  # b4's job has started its case, which hangs
    cancel_local(b4()["job_id"])
    wait_for(lambda: "b4" in "".join(_statuses_by_name(out)), timeout=120, what="b4's cancelled row")
    assert _statuses_by_name(out)["b4"] == ["cancelled"]
    wait_for(lambda: len(_statuses_by_name(out)) >= 4, timeout=180, what="four cases recorded")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver dies; its jobs run on
    driver.wait()
    first = {name: rows for name, rows in _statuses_by_name(out).items()}
    first_runs = {r.case_id: r.run_id for r in records.read(out / RECORDS).records if r.status == "ok"}
    code, stdout, err = finish(start([str(suite), "--out", str(out), "--launcher", "submitit", "--resume",
                                      "--max-parallel", "3"],
                                     {"DIFFBENCH_INJECT_FAULTS": json.dumps({"*/b2/*": "raise"})}))
    assert code == 0, err
    final = _statuses_by_name(out)
    assert sorted(final) == ["b1", "b2", "b3", "b4", "b5", "b6"]
    assert Counter(s for rows in final.values() for s in set(rows)) == Counter({"ok": 5, "error": 1}), final
    assert final["b2"] == ["error"] and all(len(v) in (1, 5) for v in final.values())  # a failure, or 5 counts
    recs = records.read(out / RECORDS).records
    for r in recs:  # cases complete before the driver died kept their records: not run again
        if r.case_id in first_runs:
            assert r.run_id == first_runs[r.case_id]
    assert len({(r.case_id, r.metric) for r in recs}) == len(recs)
    log = (out / "run.log").read_text().split("through submitit")[-1]
    resubmitted = [line for line in log.splitlines() if "submitted as job" in line]
    assert all(not any(f"/{n}/" in line for n, rows in first.items() if "ok" in rows) for line in resubmitted)
    assert (out / "records.retried.jsonl").exists()  # b2's and b4's first attempts, kept
    place = next(r for r in recs if r.status == "ok").provenance["placement"]
    assert place["launcher"] == "submitit" and place["job_id"] and place["cluster"] == "local"


def _case_id(out: Path, tag: str) -> str:
    cases = json.loads((out / "suite.resolved.json").read_text())["cases"]
    return next(c["case_id"] for c in cases if f"/{tag}/" in c["name"])


def _statuses_by_name(out: Path) -> dict[str, list[str]]:
    if not (out / RECORDS).exists():
        return {}
    cases = json.loads((out / "suite.resolved.json").read_text())["cases"]
    names = {c["case_id"]: c["name"].split("/")[2] for c in cases}
    rows: dict[str, list[str]] = {}
    for r in records.read(out / RECORDS).records:
        rows.setdefault(names[r.case_id], []).append(r.status)
    return rows


def test_submitit_parameters_for_slurm(tmp_path: Path, monkeypatch):
    """The sbatch script submitit would submit on a Slurm cluster: partition, GPUs, CPUs, time limit, the
    array's throttle and the requeue signal (no Slurm here: srun's detection is bypassed)."""
    _submitit_or_skip()
    from submitit.slurm import slurm

    from diffbench.bench.launchers.submitit_launcher import CaseJob, SubmititBackend

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", staticmethod(lambda: 1))
    backend = SubmititBackend(tmp_path, {"cluster": "slurm", "partition": "gpu", "gpus_per_case": 2,
                                         "cpus_per_case": 8, "max_parallel": 16, "time_limit_min": 90})
    assert backend.throttles_itself and backend.threads(16) == 8
    executor = backend.executor._executor
    executor.parameters["map_count"] = 40  # an array of 40 cases, as map_array submits it
    text = executor._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    for line in ("#SBATCH --array=0-39%16", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=90", "#SBATCH --signal=USR2@120",
                 "#SBATCH --job-name=diffbench", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"):
        assert line in text, (line, text)
    resubmission = CaseJob().checkpoint({"name": "x"})  # preempted or timed out: the same case, requeued
    assert isinstance(resubmission.function, CaseJob) and resubmission.args == ({"name": "x"},)


def test_submitit_without_slurm_refuses_a_partition(tmp_path: Path):
    _submitit_or_skip()
    import diffbench
    from diffbench.core.errors import UserError

    with pytest.raises(UserError, match="no Slurm here"):
        diffbench.run(str(suite_file(tmp_path)), tmp_path / "o", launcher="submitit",
                      launcher_options={"partition": "gpu"})
    with pytest.raises(UserError, match="takes no option 'address'"):
        diffbench.run(str(suite_file(tmp_path)), tmp_path / "o", launcher="submitit",
                      launcher_options={"address": "x"})


@pytest.mark.slow  # 50 s, and ray is an optional extra (pip install -e .[ray])
def test_ray_launcher_gives_the_serial_records(tmp_path: Path):
    pytest.importorskip("ray", reason="the Ray launcher's test needs pip install -e .[ray]")
    suite = suite_file(tmp_path)
    serial, via_ray = tmp_path / "serial", tmp_path / "ray"
    assert finish(start([str(suite), "--out", str(serial), "--only", "*/b[12]/*"]))[0] == 0
    code, _, err = finish(start([str(suite), "--out", str(via_ray), "--launcher", "ray", "--max-parallel", "2",
                                 "--only", "*/b[12]/*"]), timeout=400)
    assert code == 0, err
    pairs = lambda p: sorted((r.case_id, r.metric) for r in records.read(p / RECORDS).records)  # noqa: E731
    assert pairs(via_ray) == pairs(serial)
    place = records.read(via_ray / RECORDS).records[0].provenance["placement"]
    assert place["launcher"] == "ray" and place["node_id"]


def test_a_filesystem_without_flock_still_gets_whole_records(tmp_path: Path, monkeypatch):
    """NFS without lock support: flock fails with ENOLCK; records are still appended whole and the run lock
    says it cannot stop a second writer (the driver is the only writer of records.jsonl by design)."""
    import errno
    import fcntl

    from diffbench.bench.run_dir import RunLock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    rec = records.Record("r", "c", "s", {}, "params", 1.0, "count", case_size=1)
    records.append(tmp_path / RECORDS, [rec, rec])
    assert len(records.read(tmp_path / RECORDS).records) == 2
    said: list[str] = []
    with RunLock(tmp_path) as lock:
        lock.report(said.append)
    assert not lock.enforced and "does not support flock" in said[0]
