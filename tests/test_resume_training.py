"""A training case killed (SIGKILL) or preempted (SIGUSR2/SIGTERM, Slurm's warning) mid-way continues from its
checkpoint in RUN_DIR/cases/CASE_ID under --resume (or its requeued job), to the uninterrupted loss curve."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.data_trees import digit_tree

SUITE = """
name = "resume"
[defaults]
measure = ["train"]
dataset = "{data}"
train_steps = {steps}
train_batch = 8
checkpoint_every = 10
[[sweeps]]
families = ["dit"]
params = ["0.36M"]
input_shapes = ["3x16x16"]
classes = 10
devices_per_case = {world}
"""


def _suite(tmp_path: Path, world: int, steps: int = 120) -> Path:
    data = tmp_path / "data"
    if not data.exists():
        digit_tree(data, per_class=8, resolution=16)
    path = tmp_path / f"suite{world}.toml"
    path.write_text(SUITE.format(data=data, steps=steps, world=world))
    return path


def _run(suite: Path, out: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "diffbench", "run", str(suite), "--out", str(out), "--no-progress",
           "--devices", "cpu,cpu", *extra]
    p = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if wait:
        p.wait(300)
    return p


def _wait_for_checkpoint(out: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(out.glob("cases/*/train/checkpoint.safetensors"))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared under {out}")


def _records(out: Path) -> dict[str, dict]:
    return {r["metric"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (read from /proc: no psutil here)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


# 35 s: slow. The default run keeps one rank's SIGKILL resumed to the uninterrupted curve (test_training_sampling),
# the signal's checkpoint-and-resume below, and two ranks equal to one (test_data_parallel)
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the case's process")
def test_sigkill_mid_training_of_two_ranks_then_resume_gives_the_uninterrupted_curve(tmp_path):
    suite = _suite(tmp_path, world=2)
    whole = _run(suite, tmp_path / "whole")
    assert whole.returncode == 0, whole.stdout.read()
    cut = _run(suite, tmp_path / "cut", wait=False)
    _wait_for_checkpoint(tmp_path / "cut")
    time.sleep(random.uniform(0.0, 0.5))  # a random step after the first checkpoint
    for pid in [cut.pid, *_children(cut.pid)]:  # the runner, torchrun and both ranks, at once (a node lost)
        os.kill(pid, signal.SIGKILL)
    cut.wait()
    assert not (tmp_path / "cut" / "records.jsonl").exists() or "train_loss_first" not in \
        (tmp_path / "cut" / "records.jsonl").read_text()
    resumed = _run(suite, tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stdout.read()
    a, b = _records(tmp_path / "whole"), _records(tmp_path / "cut")
    assert b["train_steps"]["extra"]["resumed_from"]["model"] >= 10
    assert b["train_loss_first"]["samples"] == a["train_loss_first"]["samples"]  # the same world: bit for bit
    assert b["train_images_per_s"]["extra"]["world_size"] == 2
    assert not list((tmp_path / "cut").glob("cases/*/train"))  # a finished case's checkpoint is removed


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the case's process")
@pytest.mark.parametrize("sig", [signal.SIGUSR2, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_signal_checkpoints_and_stops_the_case_and_resume_continues(tmp_path, sig):
    """Also: a case of one rank decodes in DataLoader workers, its children (as a daemon it could have none)."""
    suite = _suite(tmp_path, world=1, steps=150)
    suite.write_text(suite.read_text().replace("checkpoint_every = 10", "checkpoint_every = 10\ndata_workers = 2"))
    whole = _run(suite, tmp_path / "whole")
    assert whole.returncode == 0
    cut = _run(suite, tmp_path / "cut", wait=False)
    _wait_for_checkpoint(tmp_path / "cut")
    # the case's process and its DataLoader workers: Slurm signals every process of the job step
    case = [pid for pid in _children(cut.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(case) == 3, "the case's process and its 2 workers were not found"
    for pid in case:
        os.kill(pid, sig)
    cut.wait(120)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["preempted"], rows
    assert "checkpoint" in rows[0]["error"]
    resumed = _run(suite, tmp_path / "cut", "--resume", "--keep-failed")  # a preempted case is continued anyway
    assert resumed.returncode == 0, resumed.stdout.read()
    a, b = _records(tmp_path / "whole"), _records(tmp_path / "cut")
    assert b["train_steps"]["extra"]["resumed_from"]["model"] > 0
    assert b["train_loss_first"]["samples"] == a["train_loss_first"]["samples"]


@pytest.mark.slow  # the signal's path into a case is the default run's (SIGUSR2 above); this is submitit's requeue
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the job's process")
def test_sigusr2_to_a_submitit_job_checkpoints_and_the_requeued_job_continues(tmp_path):
    """Slurm's warning, as submitit's local executor delivers it: the job's checkpoint() has the running case write
    its training checkpoint and stop; submitit requeues the job, which continues from that checkpoint."""
    pytest.importorskip("submitit")
    suite = _suite(tmp_path, world=1, steps=150)
    whole = _run(suite, tmp_path / "whole")
    assert whole.returncode == 0
    cmd = [sys.executable, "-m", "diffbench", "run", str(suite), "--out", str(tmp_path / "cut"), "--no-progress",
           "--launcher", "submitit"]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _wait_for_checkpoint(tmp_path / "cut")
    jobs = [pid for pid in _children(driver.pid)
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(jobs) == 1, jobs
    os.kill(jobs[0], signal.SIGUSR2)
    assert driver.wait(300) == 0, driver.stdout.read()
    log = "".join(p.read_text() for p in (tmp_path / "cut" / "submitit").glob("*_log.*"))
    assert "Calling checkpoint method" in log and "Requeued job" in log
    a, b = _records(tmp_path / "whole"), _records(tmp_path / "cut")
    assert b["train_steps"]["extra"]["resumed_from"]["model"] > 0
    # the job has both cores, the uninterrupted run one per worker: threads change the last bits of a matmul
    assert b["train_loss_first"]["samples"] == pytest.approx(a["train_loss_first"]["samples"], rel=1e-4)
