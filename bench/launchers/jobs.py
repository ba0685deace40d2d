"""A case as a cluster job, and the hand-over of its records to the driver.

A job writes its case's records to ``RUN_DIR/jobs/CASE_ID.jsonl`` in one atomic rename (never a half
file, whatever the filesystem's locking); the driver, the only writer of ``records.jsonl``, appends
them and removes the file. A job file whose case is already complete (an old job that finished after
its case was run again) is moved to ``jobs/superseded/``, not appended twice and not deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffbench.bench.expansion import Case
from diffbench.bench.placement import ENV, THREADS_ENV
from diffbench.bench.run_dir import RECORDS
from diffbench.bench.runner import CaseExecutor
from diffbench.bench.spec import CaseSpec
from diffbench.core import records
from diffbench.core.files import write_text_atomic
from diffbench.core.records import Record, utc_now

JOBS = "jobs"
INDEX = "index.json"  # case id -> the job that runs it (launcher, job id, submitted at)


RUNNING: list[CaseExecutor] = []  # in a job's process: the executor of the case it runs (to preempt it)


def preempt_running() -> None:
    """In a job's process, on the scheduler's warning: the running case checkpoints its training and stops."""
    for executor in list(RUNNING):
        executor.preempt_all()


def job_file(run_dir: Path, case_id: str) -> Path:
    return run_dir / JOBS / f"{case_id}.jsonl"


def payload(case: Any, run_id: str, suite: str, run_dir: Path | None, timeout: float | None, launcher: str,
            threads: int | None = None) -> dict[str, Any]:
    """What a job needs, as plain data (it is pickled to the job)."""
    return {"spec": case.spec.to_json(), "name": case.name, "case_id": case.case_id, "run_id": run_id,
            "suite": suite, "run_dir": str(run_dir) if run_dir is not None else None, "timeout": timeout,
            "launcher": launcher, "threads": threads}


def run_job(job: dict[str, Any], where: dict[str, Any] | None = None, ranks: dict[str, str] | None = None
            ) -> list[str]:
    """Inside a job: run the case as the local runner would (each repetition in a fresh process, status rows
    for failures) and hand its records over; returns the record lines. ``where`` describes the job for
    the records' provenance (job and array ids, node); ``ranks``: this task's torch.distributed environment when
    the job's tasks are the case's ranks (RANK, WORLD_SIZE, MASTER_ADDR...)."""
    case = Case(job["name"], CaseSpec.from_json(job["spec"]))
    run_dir = Path(job["run_dir"]) if job.get("run_dir") else None
    env = {ENV: json.dumps({"launcher": job["launcher"], **(where or {})}), **(ranks or {})}
    if job.get("threads"):  # the job's share of the cores, split between its tasks (a case's ranks) on a node
        env[THREADS_ENV] = str(max(1, int(job["threads"]) // int((ranks or {}).get("LOCAL_WORLD_SIZE", 1))))

    def log(message: str) -> None:
        if run_dir is not None:
            with open(run_dir / JOBS / f"{job['case_id']}.log", "a") as f:
                f.write(f"{utc_now()} {message}\n")

    executor = CaseExecutor(job["run_id"], job["suite"], log, job.get("timeout"), env, run_dir)
    RUNNING.append(executor)
    try:
        lines = [r.to_json() for r in executor.execute(case)]
    finally:
        RUNNING.remove(executor)
    if run_dir is not None and env.get("RANK", "0") == "0":  # of a case's ranks, rank 0 hands over
        write_text_atomic(job_file(run_dir, job["case_id"]), "".join(line + "\n" for line in lines))
    return lines


def parse(lines: list[str]) -> list[Record]:
    return [Record.from_dict(json.loads(line)) for line in lines if line.strip()]


def hand_over(run_dir: Path, case_id: str, recs: list[Record], done: set[str]) -> bool:
    """Append a job's records unless its case is complete already; True when appended."""
    if case_id in done:
        return False

    records.append(run_dir / RECORDS, recs)
    done.add(case_id)
    return True


def harvest(run_dir: Path, done: set[str], log: Any, only: set[str] | None = None) -> dict[str, list[Record]]:
    """Append the records of every job file (of cases in ``only``, if given) whose case is not complete;
    returns them by case id. Files of complete cases go to ``jobs/superseded/``."""
    folder = run_dir / JOBS
    got: dict[str, list[Record]] = {}
    if not folder.is_dir():
        return got
    for path in sorted(folder.glob("*.jsonl")):
        case_id = path.name[: -len(".jsonl")]
        if only is not None and case_id not in only:
            continue
        try:
            recs = parse(path.read_text().splitlines())
        except (ValueError, TypeError, UnicodeDecodeError) as e:  # not ours, or damaged: set aside, not lost
            _set_aside(path, "unreadable")
            log(f"job file {path.name} is unreadable ({type(e).__name__}: {e}); moved to {JOBS}/unreadable/")
            continue
        if hand_over(run_dir, case_id, recs, done):
            got[case_id] = recs
            path.unlink()
        else:
            _set_aside(path, "superseded")
            log(f"job file {path.name}: its case is complete already; moved to {JOBS}/superseded/")
    return got


def _set_aside(path: Path, why: str) -> None:
    target = path.parent / why
    target.mkdir(exist_ok=True)
    os.replace(path, target / f"{path.stem}.{utc_now().replace(':', '')}.jsonl")


def read_index(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / JOBS / INDEX
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def write_index(run_dir: Path, index: dict[str, dict[str, Any]]) -> None:
    (run_dir / JOBS).mkdir(exist_ok=True)
    write_text_atomic(run_dir / JOBS / INDEX, json.dumps(index, indent=1, sort_keys=True))
