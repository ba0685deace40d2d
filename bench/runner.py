"""The runner: each case in its own spawned process, records appended as they are measured.

Isolation: an exception, an abort, a hang past the timeout or an out-of-memory error in one
case becomes one status row (``error``, ``crash``, ``timeout``, ``oom``) and the sweep goes
on. Resume: a case is complete when its records (under one run id) number its
``case_size``; ``--resume`` keeps complete cases, moves partial ones to
``records.partial.jsonl`` (nothing measured is lost) and runs the rest again.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.bench.provenance import collect, utc_now
from diffbench.bench.spec import CaseSpec
from diffbench.bench.suites import Case, Suite
from diffbench.core import records
from diffbench.core.errors import CaseUnsupported, ConfigError
from diffbench.core.records import Record, stamp

RECORDS = "records.jsonl"
PARTIAL = "records.partial.jsonl"


@dataclass
class RunSummary:
    run_dir: Path
    total: int
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _child(spec_json: dict[str, Any], run_id: str, suite: str, case_id: str, name: str, conn: Any) -> None:
    """Entry point of a case's process: sends ("ok", records) or ("fail", status, message, traceback)."""
    from diffbench.bench.cases import execute
    from diffbench.bench.spec import CaseSpec

    try:
        recs = execute(CaseSpec.from_json(spec_json), run_id, suite, case_id, name)
        conn.send(("ok", [r.to_json() for r in recs]))
    except CaseUnsupported as e:
        conn.send(("fail", "unsupported", str(e), ""))
    except BaseException as e:  # noqa: BLE001 - everything becomes a status row
        oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        conn.send(("fail", "oom" if oom else "error", message[:500], traceback.format_exc()))
    finally:
        conn.close()


@contextlib.contextmanager
def _without_user_main() -> Iterator[None]:
    """A case's process runs diffbench's code only. multiprocessing's spawn would first re-run the caller's
    script in it (as ``__mp_main__``), so a script calling ``diffbench.run(...)`` without an
    ``if __name__ == "__main__":`` guard would start the run again inside every case; the case needs
    nothing from that script (its target and arguments are diffbench's and plain data)."""
    import multiprocessing.spawn as spawn

    original = spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = without_main  # type: ignore[assignment]
    try:
        yield
    finally:
        spawn.get_preparation_data = original  # type: ignore[assignment]


def complete_cases(path: Path) -> tuple[set[str], list[Record], list[str]]:
    """(complete case ids, records to keep, lines to set aside: incomplete cases' and unreadable ones)."""
    if not path.exists():
        return set(), [], []
    got = records.read(path)
    batches: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in got.records:
        batches[(r.case_id, r.run_id)].append(r)
    done: set[str] = set()
    keep: list[Record] = []
    partial: list[str] = []
    for (cid, _), recs in batches.items():
        size = recs[0].case_size
        metrics = {r.metric for r in recs}
        if size is not None and len(metrics) == size and cid not in done:
            done.add(cid)
            keep.extend(recs)
        else:
            partial.extend(r.to_json() for r in recs)
    return done, keep, partial + got.unreadable


def _compact(run_dir: Path) -> set[str]:
    """Rewrite records.jsonl with complete cases only; incomplete lines go to records.partial.jsonl."""
    path = run_dir / RECORDS
    done, keep, partial = complete_cases(path)
    if partial:
        with open(run_dir / PARTIAL, "a") as f:
            for line in partial:
                f.write(line.rstrip("\n") + "\n")
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(r.to_json() + "\n" for r in keep))
        os.replace(tmp, path)
    return done


class Runner:
    def __init__(self, suite: Suite, cases: list[Case], run_dir: Path, timeout_s: float | None = None,
                 progress: bool = True) -> None:
        self.suite, self.cases, self.run_dir = suite, cases, run_dir
        self.timeout_s = timeout_s
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:12]
        self.log_path = run_dir / "run.log"

    def log(self, message: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"{utc_now()} {message}\n")

    def prepare(self, resume: bool) -> set[str]:
        d = self.run_dir
        if (d / RECORDS).exists() and not resume:
            raise ConfigError(f"{d} already holds a run; add --resume to continue it or choose another --out")
        d.mkdir(parents=True, exist_ok=True)
        if Path(self.suite.source).is_file():
            shutil.copyfile(self.suite.source, d / "suite.toml")
        resolved = {"suite": self.suite.name, "source": self.suite.source,
                    "cases": [{"case_id": c.case_id, "name": c.name, "config": c.config} for c in self.cases]}
        (d / "suite.resolved.json").write_text(json.dumps(resolved, indent=1, default=str))
        if self.cases:
            from diffbench.metrics.device import device_facts

            facts = device_facts(self.cases[0].spec.device)
            (d / "device.json").write_text(json.dumps(facts, indent=1, default=str))
        return _compact(d) if resume else set()

    def run(self, resume: bool = False) -> RunSummary:
        done = self.prepare(resume)
        todo = [c for c in self.cases if c.case_id not in done]
        summary = RunSummary(self.run_dir, len(self.cases), skipped=len(self.cases) - len(todo))
        self.log(f"run {self.run_id}: {len(todo)} case(s) to run, {summary.skipped} already complete")
        from tqdm import tqdm

        bar = tqdm(total=len(self.cases), initial=summary.skipped, unit="case", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        try:
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

    def run_case(self, case: Case) -> list[str]:
        spec = case.spec
        timeout = self.timeout_s or spec.timeout_s
        while True:
            status, payload = self._spawn(case, spec, timeout)
            if status == "oom" and spec.device.startswith("cuda") and spec.oom_retry and spec.batch_size > 1:
                self.log(f"{case.name}: out of memory at batch {spec.batch_size}; retrying at half")
                spec = spec.with_batch(spec.batch_size // 2)
                continue
            break
        if status == "ok":
            recs = [Record.from_dict(json.loads(line)) for line in payload]
            records.append(self.run_dir / RECORDS, recs)
            statuses = [r.status for r in recs]
            self.log(f"{case.name}: ok, {len(recs)} record(s)")
            return ["ok" if "ok" in statuses else statuses[0]]
        self._status_row(case, spec, status, payload)
        return [status]

    def _spawn(self, case: Case, spec: CaseSpec, timeout: float) -> tuple[str, Any]:
        ctx = mp.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        args = (spec.to_json(), self.run_id, self.suite.name, case.case_id, case.name, send)
        proc = ctx.Process(target=_child, args=args, daemon=True)
        t0 = time.monotonic()
        with _without_user_main():
            proc.start()
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

    def _status_row(self, case: Case, spec: CaseSpec, status: str, message: str) -> None:
        self.log(f"{case.name}: {status}: {message}")
        from diffbench.bench.precision import flags

        prov = collect(spec.device, flags(spec.precision, spec.attention, spec.compile, spec.channels_last), spec.seed)
        rec = Record(self.run_id, case.case_id, self.suite.name, spec.to_json(), "case", None, "", status=status,
                     error=" ".join(str(message).split())[:500], case_size=1)
        records.append(self.run_dir / RECORDS, stamp(rec, prov))


def select(cases: list[Case], only: str | None) -> list[Case]:
    if not only:
        return cases
    picked = [c for c in cases if any(fnmatch.fnmatchcase(c.name, g.strip()) for g in only.split(","))]
    if not picked:
        raise ConfigError(f"--only {only!r} matches none of the {len(cases)} case(s); see --dry-run for their names")
    return picked
