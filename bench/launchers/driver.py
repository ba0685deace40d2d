"""The driver of a launched run: submits the cases as jobs, waits, and appends each job's records as
it ends. It is the only writer of ``records.jsonl``, under the run directory's lock on the driver's
machine; jobs hand records over in their own files (:mod:`.jobs`).

Resume after anything (the driver killed, a job cancelled, preempted or lost with its node):

1. the records are compacted as for a local run (failed cases retried unless ``keep_failed``);
2. job files of jobs that ended while no driver was waiting are appended (their cases are done);
3. jobs of the previous driver that are still queued or running are waited for, not resubmitted;
4. every other missing case is submitted again.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from diffbench.bench import placement
from diffbench.bench.accuracy import case_status
from diffbench.bench.launchers import jobs
from diffbench.bench.run_dir import RunLock
from diffbench.bench.runner import CaseExecutor, Runner, RunSummary
from diffbench.core.files import output_dir
from diffbench.core.records import utc_now


@dataclass
class Ended:
    """A job that ended: its record lines (None when it handed none over), else why not."""

    lines: list[str] | None
    status: str = "ok"  # when lines is None: cancelled, crash or error
    message: str = ""


class Backend(Protocol):
    name: str
    throttles_itself: bool  # True: submit every case at once and let the scheduler keep max_parallel

    def submit(self, payloads: list[dict[str, Any]], max_parallel: int) -> list[tuple[str, Any]]: ...

    def poll(self, handle: Any) -> Ended | None: ...

    def reattach(self, entry: dict[str, Any]) -> Any | None: ...

    def threads(self, max_parallel: int) -> int | None: ...

    def close(self) -> None: ...


class Driver:
    def __init__(self, suite: Any, cases: list[Any], run_dir: Path, backend: Backend, timeout: float | None,
                 progress: bool, max_parallel: int = 0, poll_s: float = 1.0) -> None:
        self.suite, self.cases, self.run_dir, self.backend = suite, cases, run_dir, backend
        self.timeout, self.progress, self.max_parallel, self.poll_s = timeout, progress, max_parallel, poll_s
        self.runner = Runner(suite, cases, run_dir, timeout, progress)  # its run description, log and resume
        self.run_id = self.runner.run_id

    def run(self, resume: bool, keep_failed: bool) -> RunSummary:
        output_dir(self.run_dir)
        with RunLock(self.run_dir) as lock:
            lock.report(self.runner.log)
            try:
                return self._run(resume, keep_failed)
            finally:
                self.backend.close()

    def _run(self, resume: bool, keep_failed: bool) -> RunSummary:
        log = self.runner.log
        done = self.runner.prepare(resume, keep_failed)
        ids = {c.case_id for c in self.cases}
        for cid in jobs.harvest(self.run_dir, done, log, only=ids):
            log(f"{self._name(cid)}: records handed over by a job that ended while no driver was waiting")
        todo = [c for c in self.cases if c.case_id not in done]
        summary = RunSummary(self.run_dir, len(self.cases), skipped=len(self.cases) - len(todo))
        index = jobs.read_index(self.run_dir)
        pending: dict[str, tuple[Any, Any]] = {}  # case id -> (case, job handle)
        for case in todo:
            entry = index.get(case.case_id) or {}
            handle = self.backend.reattach(entry) if entry and resume else None
            if handle is not None:
                pending[case.case_id] = (case, handle)
                log(f"{case.name}: waiting for job {entry['job_id']} of the previous driver (still running)")
        for case in (c for c in todo if c.refused and c.case_id not in pending):  # nothing to submit: its row now
            summary.statuses[self.runner.run_case(case)[0]] += 1
        queue = [c for c in todo if c.case_id not in pending and not c.refused]
        log(f"run {self.run_id}: {len(todo)} case(s) to run through {self.backend.name} "
            f"({len(pending)} still running from before), {summary.skipped} already complete")

        bar = tqdm(total=len(self.cases), initial=summary.skipped, unit="case", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while queue or pending:
                room = len(queue) if self.backend.throttles_itself or not self.max_parallel else \
                    max(0, self.max_parallel - len(pending))
                if room and queue:
                    batch, queue = queue[:room], queue[room:]
                    self._submit(batch, pending, index)
                for cid in list(pending):
                    case, handle = pending[cid]
                    ended = self.backend.poll(handle)
                    if ended is None:
                        continue
                    del pending[cid]
                    status = self._finish(case, ended, done, index.get(cid, {}).get("job_id"))
                    summary.statuses[status] += 1
                    bar.update(1)
                    bar.set_postfix_str(case.name[-40:])
                if pending or queue:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            log(f"driver interrupted; {len(pending)} job(s) keep running and --resume waits for them")
            raise
        finally:
            bar.close()
        return summary

    def _submit(self, batch: list[Any], pending: dict[str, tuple[Any, Any]], index: dict[str, Any]) -> None:
        threads = self.backend.threads(self.max_parallel or len(batch))
        payloads = [jobs.payload(c, self.run_id, self.suite.name, self.run_dir, self.timeout, self.backend.name,
                                 threads) for c in batch]
        submitted = self.backend.submit(payloads, self.max_parallel)
        for case, (job_id, handle) in zip(batch, submitted, strict=True):
            pending[case.case_id] = (case, handle)
            index[case.case_id] = {"job_id": job_id, "name": case.name, "launcher": self.backend.name,
                                   "submitted_at": utc_now(), "run_id": self.run_id}
            self.runner.log(f"{case.name}: submitted as job {job_id}")
        jobs.write_index(self.run_dir, index)

    def _finish(self, case: Any, ended: Ended, done: set[str], job_id: str | None = None) -> str:
        """Append what the job handed over (its file, or its result), else one status row."""
        log = self.runner.log
        recs = jobs.harvest(self.run_dir, done, log, only={case.case_id}).get(case.case_id)
        if recs is None:
            if ended.lines is not None:
                recs = jobs.parse(ended.lines)
            else:
                where = json.dumps({"launcher": self.backend.name, **({"job_id": job_id} if job_id else {})})
                executor = CaseExecutor(self.run_id, self.suite.name, log, self.timeout, {placement.ENV: where})
                recs = [executor.status_row(case, case.spec, ended.status, ended.message)]
            if not jobs.hand_over(self.run_dir, case.case_id, recs, done):
                log(f"{case.name}: its job ended after the case was complete; the later result is not appended")
        return case_status(recs)

    def _name(self, case_id: str) -> str:
        return next((c.name for c in self.cases if c.case_id == case_id), case_id)
