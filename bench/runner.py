"""The runner: each case in its own spawned process, records appended as they are measured.

Isolation: an exception, an abort, a hang past the timeout or an out-of-memory error in one
case becomes one status row (``error``, ``crash``, ``timeout``, ``oom``) and the sweep goes
on. Resume: a case is complete when its records (under one run id) number its
``case_size``; ``--resume`` keeps complete cases, moves partial ones to
``records.partial.jsonl`` (nothing measured is lost) and runs the rest again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from diffbench.bench import placement, ranks, workdir
from diffbench.bench.accuracy import case_status, gate
from diffbench.bench.cases import execute
from diffbench.bench.expansion import Case
from diffbench.bench.placement import Slot, apply_threads, child_env
from diffbench.bench.precision import flags
from diffbench.bench.provenance import collect, utc_now
from diffbench.bench.repetitions import RepetitionMismatch, merge
from diffbench.bench.run_dir import RECORDS, RETRIED, RunLock, _compact, regate
from diffbench.bench.spawning import environment, without_user_main
from diffbench.bench.spec import CaseSpec
from diffbench.bench.suites import Suite
from diffbench.core import distributed, records
from diffbench.core.errors import ConfigError
from diffbench.core.files import output_dir, write_text_atomic
from diffbench.core.log import logger
from diffbench.core.records import Record, stamp
from diffbench.metrics.device import device_facts


@dataclass
class RunSummary:
    run_dir: Path
    total: int
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _child(spec_json: dict[str, Any], run_id: str, suite: str, case_id: str, name: str, conn: Any) -> None:
    """Entry point of a case's process: one rank, of a world of one or of the ranks a launcher started (Slurm's
    tasks, with RANK and WORLD_SIZE set); sends ("ok", records: none from ranks other than 0) or ("fail", status,
    message, traceback)."""
    try:
        apply_threads()
        spec = CaseSpec.from_json(spec_json)
        _, device = distributed.init(spec.device)  # a world of one needs nothing
        recs = execute(dataclasses.replace(spec, device=device), run_id, suite, case_id, name)
        distributed.finish()
        msg: tuple[Any, ...] = ("ok", [r.to_json() for r in recs])
    except BaseException as e:  # noqa: BLE001 - everything becomes a status row
        msg = ("fail", *ranks.outcome(e))
    try:
        conn.send(msg)
    except OSError:  # BrokenPipeError: the runner is gone (killed); the result has nowhere to go
        pass
    finally:
        conn.close()


class CaseExecutor:
    """Runs one case where it is called (the runner's process, a worker thread, a cluster job): each repetition
    in a fresh spawned process, an out-of-memory error on a GPU retried at half the batch, everything that goes
    wrong turned into one status row. Returns the case's records; writing them is the caller's business."""

    _start_lock = threading.Lock()  # one process start at a time: the child's environment is set around it

    def __init__(self, run_id: str, suite: str, log: Any, timeout_s: float | None = None,
                 env: dict[str, str] | None = None, run_dir: Path | None = None) -> None:
        self.run_id, self.suite, self.log, self.run_dir = run_id, suite, log, run_dir
        self.timeout_s = timeout_s
        self.env = dict(env or {})  # given to the case's processes (the devices and threads of a worker)
        self.live: set[Any] = set()  # processes running now, killed by kill_all

    def execute(self, case: Case) -> list[Record]:
        spec = case.spec
        if case.refused:  # it cannot run (a family from outside that breaks the contract): its row, no process
            return [self.status_row(case, spec, "error", case.refused)]
        timeout = self.timeout_s or spec.timeout_s
        done: list[list[Record]] = []
        while len(done) < spec.repetitions:
            status, payload = self._spawn(case, spec, timeout)
            if status == "oom" and spec.device.startswith("cuda") and spec.oom_retry and spec.batch_size > 1:
                self.log(f"{case.name}: out of memory at batch {spec.batch_size}; retrying at half")
                spec = spec.with_batch(spec.batch_size // 2)
                done = []  # every repetition at the one batch size the case ends with
                continue
            if status != "ok":
                where = f"repetition {len(done) + 1} of {spec.repetitions}: " if spec.repetitions > 1 else ""
                return [self.status_row(case, spec, status, where + str(payload))]
            if self.env.get("RANK", "0") != "0":  # a launcher's rank other than 0: rank 0 records the case
                return []
            done.append([Record.from_dict(json.loads(line)) for line in payload])
            work = workdir.case_dir(self.run_dir, case.case_id)
            if work:  # a repetition that ended ok: its checkpoint served its purpose (the next starts afresh)
                shutil.rmtree(work, ignore_errors=True)
        try:
            recs = gate(spec.accept, merge(done))
        except RepetitionMismatch as e:
            return [self.status_row(case, spec, "error", str(e))]
        status = case_status(recs)
        self.log(f"{case.name}: {status}, {len(recs)} record(s)"
                 + (f" from {spec.repetitions} repetitions" if spec.repetitions > 1 else "")
                 + (f": {recs[-1].error}" if status == "inaccurate" else ""))
        return recs

    def _spawn(self, case: Case, spec: CaseSpec, timeout: float) -> tuple[str, Any]:
        env = dict(self.env)
        work = workdir.case_dir(self.run_dir, case.case_id)
        if work:
            env[workdir.CASE_DIR_ENV] = work
        world = spec.placement.world_size
        if world > 1 and "WORLD_SIZE" not in env:  # several ranks: torchrun on its devices, rank 0's result by file
            job = {"spec": spec.to_json(), "run_id": self.run_id, "suite": self.suite, "case_id": case.case_id,
                   "name": case.name}
            return ranks.run_ranks(job, world, work, timeout, env, self.live)
        ctx = mp.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        args = (spec.to_json(), self.run_id, self.suite, case.case_id, case.name, send)
        # not a daemon: a case's DataLoader workers are its children (a daemon may have none); the finally below
        # kills it whatever ends the wait, as exiting killed a daemon
        proc = ctx.Process(target=_child, args=args, daemon=False)
        t0 = time.monotonic()
        with self._start_lock, environment(env), without_user_main():
            proc.start()
        self.live.add(proc)
        send.close()
        try:
            if recv.poll(timeout):
                try:
                    msg = recv.recv()
                except EOFError:  # died without a word
                    msg = None
            else:
                msg = None
            proc.join(timeout=max(1.0, timeout - (time.monotonic() - t0)) if msg else 5.0)
            if msg is None:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
                    return "timeout", f"no result within {timeout:g} s; the case's process was killed"
                return "crash", f"the case's process died (exit code {proc.exitcode}) without a result"
            if msg[0] == "ok":
                return "ok", msg[1]
            if msg[3]:
                self.log(f"{case.name}: {msg[1]}\n{msg[3]}")
            return msg[1], msg[2]
        except KeyboardInterrupt:
            proc.kill()
            proc.join()
            raise
        finally:
            recv.close()
            if proc.is_alive():
                proc.kill()
            self.live.discard(proc)

    def preempt_all(self, wait_s: float = 120.0) -> None:
        """Slurm's warning (the job's process was signalled): every running case writes its checkpoint and stops;
        waits for them (at most ``wait_s``), so that a requeued job continues where they stopped."""
        procs = list(self.live)
        for proc in procs:
            ranks.preempt(proc)
        deadline = time.monotonic() + wait_s
        for proc in procs:
            left = max(0.1, deadline - time.monotonic())
            with contextlib.suppress(Exception):
                proc.wait(left) if hasattr(proc, "wait") else proc.join(left)

    def kill_all(self) -> None:
        for proc in list(self.live):
            with contextlib.suppress(Exception):
                proc.kill()

    def status_row(self, case: Case, spec: CaseSpec, status: str, message: str) -> Record:
        self.log(f"{case.name}: {status}: {message}")

        # where the case was placed, read from its environment (os.environ is changed only around a process start)
        where = placement.current({**os.environ, **self.env})
        prov = collect(spec.device, flags(spec.precision, spec.attention, spec.compile, spec.channels_last),
                       spec.seed, where=where)
        rec = Record(self.run_id, case.case_id, self.suite, spec.to_json(), "case", None, "", status=status,
                     error=" ".join(str(message).split())[:500], case_size=1)
        return stamp(rec, prov)


def _join(threads: list[threading.Thread]) -> None:
    """Wait for every thread, in short joins: Ctrl-C reaches the waiting thread between them."""
    for t in threads:
        while t.is_alive():
            t.join(0.5)


class Runner:
    """Runs a suite's cases and appends their records to ``RUN_DIR/records.jsonl``: one at a time, or with
    ``devices`` one worker per device (``--devices 0,1,2,3`` or ``cpu,cpu``), each case's process seeing its
    worker's devices only. Records of a case are appended whole, under the file's lock, whatever the
    concurrency; a case needing several devices (``devices_per_case``) waits until that many are free."""

    def __init__(self, suite: Suite, cases: list[Case], run_dir: Path, timeout_s: float | None = None,
                 progress: bool = True, devices: list[Slot] | None = None) -> None:
        self.suite, self.cases, self.run_dir = suite, cases, run_dir
        self.timeout_s = timeout_s
        self.progress = progress
        self.devices = devices or []
        self.run_id = uuid.uuid4().hex[:12]
        self.log_path = run_dir / "run.log"
        self._log_lock = threading.Lock()
        self.executor = CaseExecutor(self.run_id, suite.name, self.log, timeout_s, run_dir=run_dir)

    def log(self, message: str) -> None:
        """A line of run.log, also a debug message (shown by the CLI's --verbose)."""
        with self._log_lock, open(self.log_path, "a") as f:
            f.write(f"{utc_now()} {message}\n")
        logger.debug(message)

    def prepare(self, resume: bool, keep_failed: bool = False) -> set[str]:
        """Write the run's description; with ``resume``, compact the records and return the complete cases.
        Called with the run directory's lock held."""
        d = self.run_dir
        path = d / RECORDS
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ConfigError(f"{path} is not a regular file (a link or a folder); diffbench writes records only "
                              "to a plain file it owns: remove it or choose another --out")
        if path.exists() and not resume:
            raise ConfigError(f"{d} already holds a run; add --resume to continue it or choose another --out")
        if Path(self.suite.source).is_file():
            write_text_atomic(d / "suite.toml", Path(self.suite.source).read_text())
        resolved = {"suite": self.suite.name, "source": self.suite.source, "report": self.suite.report,
                    "overrides": self.suite.overrides,
                    "cases": [{"case_id": c.case_id, "name": c.name, "config": c.config} for c in self.cases]}
        write_text_atomic(d / "suite.resolved.json", json.dumps(resolved, indent=1, default=str))
        if self.cases:
            facts = device_facts(self.cases[0].spec.device)
            write_text_atomic(d / "device.json", json.dumps(facts, indent=1, default=str))
        if not resume:
            return set()
        done, retried = _compact(d, retry_failed=not keep_failed)
        regated = regate(d, {c.case_id: c.spec.accept for c in self.cases if c.case_id in done})
        if regated:
            names = {c.case_id: c.name for c in self.cases}
            self.log("accuracy bands changed since these cases ran; applied to their kept records: "
                     + ", ".join(names.get(cid, cid) for cid in regated))
        if retried:
            names = {c.case_id: c.name for c in self.cases}
            self.log(f"retrying {len(retried)} failed case(s) (their failed attempts are kept in {RETRIED}): "
                     + ", ".join(names.get(cid, cid) for cid in retried))
            logger.info(f"retrying {len(retried)} failed case(s); --keep-failed keeps them")
        return done

    def run(self, resume: bool = False, keep_failed: bool = False) -> RunSummary:
        """Run the cases here (a launcher's driver uses this runner's description, resume and log only)."""
        spread = [c for c in self.cases if c.spec.placement.nodes > 1]
        if spread:
            raise ConfigError(f"case {spread[0].name} spans {spread[0].spec.placement.nodes} machines (nodes); run "
                              "it with --launcher submitit, which starts one Slurm task per rank")
        too_big = [c for c in self.cases if c.spec.placement.devices_per_case > max(1, len(self.devices))]
        if too_big:
            raise ConfigError(f"case {too_big[0].name} needs {too_big[0].spec.placement.devices_per_case} devices "
                              f"(devices_per_case) but the run has {max(1, len(self.devices))}; "
                              "give more with --devices")
        output_dir(self.run_dir)
        with RunLock(self.run_dir) as lock:
            lock.report(self.log)
            return self._run(resume, keep_failed)

    def _run(self, resume: bool, keep_failed: bool) -> RunSummary:
        done = self.prepare(resume, keep_failed)
        todo = [c for c in self.cases if c.case_id not in done]
        summary = RunSummary(self.run_dir, len(self.cases), skipped=len(self.cases) - len(todo))
        workers = f" on {len(self.devices)} workers ({','.join(s.name for s in self.devices)})" if self.devices else ""
        self.log(f"run {self.run_id}: {len(todo)} case(s) to run{workers}, {summary.skipped} already complete")

        bar = tqdm(total=len(self.cases), initial=summary.skipped, unit="case", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        try:
            if len(self.devices) > 1:
                self._run_concurrently(todo, summary, bar)
            else:
                if self.devices:
                    self.executor.env = child_env(self.devices, 1, 0)
                for case in todo:
                    bar.set_postfix_str(case.name[-40:])
                    for status in self.run_case(case):
                        summary.statuses[status] += 1
                    bar.update(1)
        except KeyboardInterrupt:
            self.log("interrupted by the user; the run directory is resumable")
            raise
        finally:
            bar.close()
        return summary

    def _run_concurrently(self, todo: list[Case], summary: RunSummary, bar: Any) -> None:
        """One thread per running case; a case starts when the devices it needs are free (cases in suite
        order). The threads only wait on their case's process; records are appended under the file's lock."""
        free = list(range(len(self.devices)))
        cond = threading.Condition()
        threads: list[threading.Thread] = []
        executors: list[CaseExecutor] = []
        failures: list[BaseException] = []

        def work(case: Case, held: list[int], executor: CaseExecutor) -> None:
            try:
                statuses = self.run_case(case, executor)
                with cond:
                    for status in statuses:
                        summary.statuses[status] += 1
                    bar.update(1)
            except BaseException as e:  # noqa: BLE001 - re-raised in the runner's thread
                failures.append(e)
            finally:
                with cond:
                    free.extend(held)
                    free.sort()
                    cond.notify_all()

        try:
            for case in todo:
                need = case.spec.placement.devices_per_case
                with cond:
                    while len(free) < need and not failures:
                        cond.wait(0.5)
                    if failures:
                        break
                    held = [free.pop(0) for _ in range(need)]
                slots = [self.devices[i] for i in held]
                executor = CaseExecutor(self.run_id, self.suite.name, self.log, self.timeout_s,
                                        child_env(slots, len(self.devices), held[0]), self.run_dir)
                executors.append(executor)
                t = threading.Thread(target=work, args=(case, held, executor), daemon=True,
                                     name=f"diffbench-worker-{held[0]}")
                t.start()
                threads.append(t)
                bar.set_postfix_str(case.name[-40:])
            _join(threads)
        except KeyboardInterrupt:
            for executor in executors:
                executor.kill_all()
            raise
        if failures:
            raise failures[0]

    def run_case(self, case: Case, executor: CaseExecutor | None = None) -> list[str]:
        """Run a case (each of its repetitions in a fresh process) and append its records, or one status row."""
        recs = (executor or self.executor).execute(case)
        records.append(self.run_dir / RECORDS, recs)
        return [case_status(recs)]


def select(cases: list[Case], only: str | None) -> list[Case]:
    if not only:
        return cases
    picked = [c for c in cases if any(fnmatch.fnmatchcase(c.name, g.strip()) for g in only.split(","))]
    if not picked:
        raise ConfigError(f"--only {only!r} matches none of the {len(cases)} case(s); see --dry-run for their names")
    return picked
