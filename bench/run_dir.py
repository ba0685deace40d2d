"""A run directory: its one writer (:class:`RunLock`), and which of its cases are complete, so that ``--resume``
keeps those, sets incomplete and unreadable lines aside in ``records.partial.jsonl`` and failed attempts being
retried in ``records.retried.jsonl`` (nothing measured is lost), and runs the rest."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections import defaultdict
from pathlib import Path
from typing import Any

from diffbench.bench.accuracy import Band, bands, gate
from diffbench.bench.provenance import utc_now
from diffbench.core import records
from diffbench.core.errors import ConfigError
from diffbench.core.files import write_text_atomic
from diffbench.core.records import Record

RECORDS = "records.jsonl"
PARTIAL = "records.partial.jsonl"
# a case that ended so is run again by --resume (unless --keep-failed)
FAILED = ("timeout", "error", "crash", "oom", "cancelled")
# a case stopped by a signal after its checkpoint (Slurm's warning before a time limit): always continued by
# --resume, from that checkpoint, --keep-failed or not
PAUSED = ("preempted",)
RETRIED = "records.retried.jsonl"  # the failed attempts a resumed run retried: kept, not lost


def complete_cases(path: Path, retry_failed: bool = False) -> tuple[set[str], list[Record], list[str], list[str]]:
    """(complete case ids, records to keep, lines to set aside: incomplete cases' and unreadable ones,
    failed attempts to retry). With ``retry_failed`` a case whose only record is a failure status
    (timeout, error, crash, oom) is not complete."""
    if not path.exists():
        return set(), [], [], []
    got = records.read(path)
    batches: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in got.records:
        batches[(r.case_id, r.run_id)].append(r)
    done: set[str] = set()
    keep: list[Record] = []
    partial: list[str] = []
    failed: list[Record] = []
    for (cid, _), recs in batches.items():
        size = recs[0].case_size
        metrics = {r.metric for r in recs}
        if size is not None and len(metrics) == size and cid not in done:
            if len(recs) == 1 and (recs[0].status in PAUSED or retry_failed and recs[0].status in FAILED):
                failed.append(recs[0])
                continue
            done.add(cid)
            keep.extend(recs)
        else:
            partial.extend(r.to_json() for r in recs)
    retried = [r.to_json() for r in failed if r.case_id not in done]
    partial += [r.to_json() for r in failed if r.case_id in done]  # a failure superseded by a complete run
    return done, keep, partial + got.unreadable, retried


def regate(run_dir: Path, accept: dict[str, tuple[Band, ...]]) -> list[str]:
    """Apply the suite's current accuracy bands (case id -> bands) to the complete cases a resumed run keeps,
    whose records were gated with the bands of their own run (a band added before --resume was never applied to
    them). Each such case's measurements stay as they are; their band marks, the ``inaccurate`` row and the config's
    ``accept`` are redone. Returns the ids of the cases regated."""
    path = run_dir / RECORDS
    if not path.exists():
        return []
    got = records.read(path)
    by_case: dict[str, list[Record]] = defaultdict(list)
    for r in got.records:
        by_case[r.case_id].append(r)
    changed, out = [], []
    for cid, recs in by_case.items():
        want = accept.get(cid)
        had = bands(recs[0].config.get("accept")) if isinstance(recs[0].config.get("accept"), dict) else ()
        if want is None or want == had:
            out.extend(recs)
            continue
        config = {k: v for k, v in recs[0].config.items() if k != "accept"}
        if want:
            config["accept"] = {n: [lo, hi] for n, lo, hi in want}
        plain = [dataclasses.replace(r, config=config, case_size=None,
                                     extra={k: v for k, v in r.extra.items() if k not in ("accept", "accepted")})
                 for r in recs if not (r.metric == "case" and r.status == "inaccurate")]
        gated = gate(want, plain)
        out.extend(dataclasses.replace(r, case_size=len(gated)) for r in gated)
        changed.append(cid)
    if changed:
        write_text_atomic(path, "".join(r.to_json() + "\n" for r in out) + "".join(u + "\n" for u in got.unreadable))
    return changed


def _append_lines(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        for line in lines:
            f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def _compact(run_dir: Path, retry_failed: bool = False) -> tuple[set[str], list[str]]:
    """Rewrite records.jsonl with complete cases only; incomplete lines go to records.partial.jsonl, failed
    attempts being retried to records.retried.jsonl. Returns (complete ids, ids of the retried cases)."""
    path = run_dir / RECORDS
    done, keep, partial, retried = complete_cases(path, retry_failed)
    if partial:
        _append_lines(run_dir / PARTIAL, partial)
    if retried:
        _append_lines(run_dir / RETRIED, retried)
    if partial or retried:
        write_text_atomic(path, "".join(r.to_json() + "\n" for r in keep))
    return done, [json.loads(line)["case_id"] for line in retried]


class RunLock:
    """One writer per run directory: an advisory ``flock`` on ``RUN_DIR/.lock`` held for the whole run.

    The file names the holder (pid, host, start time) for the message a second writer gets. The kernel
    drops a ``flock`` when its holder dies, however it dies, so a lock file left by a dead process is
    free: it is taken over and the takeover is logged. (``flock`` may not work across machines on NFS;
    scale-out writes per-job files for that reason.)"""

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / self.NAME
        self.fd: int | None = None
        self.stale: dict[str, Any] | None = None
        self.enforced = True  # False on a filesystem without flock: one writer is then not enforced

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot open the run directory's lock ({e.strerror})") from None
        try:
            self.enforced = records.lock_file(fd, blocking=False)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"
                   if holder else "another process")
            raise ConfigError(f"{self.path.parent} is being written by another diffbench run ({who}); wait for it "
                              "to finish or choose another --out") from None
        previous = self._holder(fd)
        if previous and self.enforced:
            self.stale = previous  # its holder is gone: the kernel released its flock
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now()}).encode(), 0)
        self.fd = fd
        return self

    def report(self, log: Any) -> None:
        """Log a taken-over stale lock, or that this filesystem cannot lock (one writer then not enforced)."""
        if self.stale:
            log(f"took over a stale lock of pid {self.stale.get('pid', '?')} on {self.stale.get('host', '?')} "
                "(that process is gone)")
        if not self.enforced:
            log(f"{self.path}: this filesystem does not support flock; a second diffbench run writing this "
                "directory at the same time would not be stopped")

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return data if isinstance(data, dict) else {}
        except (ValueError, OSError):
            return {}

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # released: no holder to name
            if self.enforced:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
