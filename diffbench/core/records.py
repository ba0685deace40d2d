"""Records: the one schema for results. One JSON object per line (JSONL), one line per measurement.

Writing appends and flushes each line under an exclusive lock, so concurrent writers (the
runner's case processes) never interleave; reading tolerates a torn line (a writer killed
mid-write), reports it, and keeps everything else. Reports are built from records alone.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import fcntl
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from diffbench.core.errors import BadInputError

SCHEMA_VERSION = 1

Status = Literal["ok", "oom", "timeout", "error", "crash", "cancelled", "inaccurate", "unsupported", "skipped",
                 "preempted"]
STATUSES: tuple[str, ...] = ("ok", "oom", "timeout", "error", "crash", "cancelled", "inaccurate", "unsupported",
                             "skipped", "preempted")


@dataclass(frozen=True)
class Record:
    """One measurement (or one failed attempt at one).

    Fields, in the order they appear in the JSON object:

    - ``schema_version``: integer version of this layout; readers refuse newer versions.
    - ``run_id``: identifies one invocation of a suite (all records of a run directory share it,
      a resumed run gets a new one).
    - ``case_id``: hash of the case's resolved config; the identity used by ``--resume``.
    - ``suite``: the suite's name (``smoke``, ``dit-table``, ... or a file stem).
    - ``config``: the case's resolved config (model, input shape, batch size, precision, ...).
    - ``metric``: what was measured, e.g. ``params``, ``gmacs``, ``latency_ms``, ``fid``.
    - ``value``: the number, or ``null`` when the status is not ``ok`` or the quantity is not
      available here (never a string, never a made-up number).
    - ``unit``: unit of ``value`` (``count``, ``GMAC``, ``ms``, ``images/s``, ``bytes``, ``J``, ``1``).
    - ``status``: ``ok``, ``oom``, ``timeout``, ``error``, ``crash``, ``cancelled`` (a cluster job cancelled or
      preempted before it reported), ``inaccurate`` (the ``case`` row of a case whose metric fell outside
      its accuracy band: bench/accuracy.py), ``unsupported`` or ``skipped``.
    - ``error``: one-line reason when the status is not ``ok`` or the value is null, else null.
    - ``samples``: raw samples behind ``value`` (e.g. every timed iteration), or null.
    - ``extra``: metric-specific context (detector name and weights hash, verified flag, ...).
    - ``provenance``: git commit and dirtiness, versions, device, host, precision flags, seed,
      timestamps: see :class:`diffbench.bench.provenance.Provenance`.
    - ``case_size``: how many records the case wrote in its batch; a case with fewer records under
      one ``run_id`` is incomplete (its writer was killed) and ``--resume`` runs it again.
    """

    run_id: str
    case_id: str
    suite: str
    config: dict[str, Any]
    metric: str
    value: float | None
    unit: str
    status: str = "ok"
    error: str | None = None
    samples: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    case_size: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.value is not None:
            if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
                raise TypeError(f"value must be a number or None, got {type(self.value).__name__}")
            if not math.isfinite(self.value):
                raise ValueError(f"value must be finite (use value=None with an error), got {self.value}")
        if self.status != "ok" and self.value is not None:
            raise ValueError("a record whose status is not 'ok' carries no value")

    def to_json(self) -> str:
        """One line of strict JSON. A NaN or infinity anywhere (config, extra, provenance) is refused: Python's
        json would write the tokens NaN and Infinity, which are not JSON and which other readers reject."""
        d = dataclasses.asdict(self)
        ordered = {"schema_version": d.pop("schema_version"), **d}
        try:
            return json.dumps(ordered, sort_keys=False, separators=(",", ":"), default=_json_default, allow_nan=False)
        except ValueError:
            bad = [k for k, v in ordered.items() if not _strict_json(v)]
            raise ValueError(f"record {self.metric!r} of case {self.case_id}: a NaN or infinite number in "
                             f"{', '.join(bad) or 'a field'}; records hold finite numbers only") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """A record from parsed JSON, every field's type checked: a line that parses is still untrusted."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("run_id", "case_id", "suite", "config", "metric", "value", "unit") if n not in d]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        for key, kinds in FIELD_TYPES.items():
            if key in d and not _is(d[key], kinds):
                expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise TypeError(f"{key} must be {expected}, got {type(d[key]).__name__}")
        value = d.get("value")
        if value is not None and abs(value) > 1e300:
            raise ValueError(f"value {str(value)[:20]}... is out of range")
        samples = d.get("samples")
        if samples is not None and not all(_is(x, (int, float)) and math.isfinite(x) and abs(x) <= 1e300
                                           for x in samples):
            raise ValueError("samples must be a list of finite numbers")
        size = d.get("case_size")
        if size is not None and size < 1:
            raise ValueError(f"case_size must be positive, got {size}")
        return cls(**{k: v for k, v in d.items() if k in names})


FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "schema_version": (int,), "run_id": (str,), "case_id": (str,), "suite": (str,), "config": (dict,),
    "metric": (str,), "value": (int, float, type(None)), "unit": (str,), "status": (str,),
    "error": (str, type(None)), "samples": (list, type(None)), "extra": (dict,), "provenance": (dict,),
    "case_size": (int, type(None)),
}


def _is(v: Any, kinds: tuple[type, ...]) -> bool:
    """isinstance, with booleans not counted as numbers (JSON true is not 1)."""
    return isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)


class _NonFinite(ValueError):
    pass


def _no_constant(token: str) -> Any:
    """json's hook for NaN, Infinity and -Infinity: not JSON, and a record holds finite numbers only (one that
    held them could not be written back by --resume)."""
    raise _NonFinite(f"{token} is not a JSON number")


def _where_non_finite(line: bytes) -> str:
    """The fields of a line that hold NaN or an infinity, for the problem's message."""
    try:
        loose = json.loads(line)
    except (ValueError, RecursionError):
        return "a field"
    return ", ".join(k for k, v in loose.items() if not _strict_json(v)) if isinstance(loose, dict) else "a field"


def _strict_json(value: Any) -> bool:
    try:
        json.dumps(value, default=_json_default, allow_nan=False)
    except ValueError:
        return False
    return True


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def utc_now() -> str:
    """ISO-8601 UTC timestamp with microseconds, e.g. ``2026-11-25T20:01:02.123456+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def stamp(record: Record, provenance: Any) -> Record:
    """Attach provenance (a dataclass or a dict) with ``recorded_at`` set to now."""
    is_dc = dataclasses.is_dataclass(provenance) and not isinstance(provenance, type)
    prov = dataclasses.asdict(provenance) if is_dc else dict(provenance)
    prov["recorded_at"] = utc_now()
    return dataclasses.replace(record, provenance=prov)


NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # a filesystem without flock (some NFS)


def lock_file(fd: int, blocking: bool = True) -> bool:
    """``flock`` the file; False when the filesystem cannot (then the caller is the only writer by design: the
    runner holds the run directory, and under a launcher only the driver writes records.jsonl). Raises
    BlockingIOError when non-blocking and another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        raise
    except OSError as e:
        if e.errno in NO_LOCKS:
            return False
        raise
    return True


def append(path: str | os.PathLike[str], records: Record | Iterable[Record]) -> None:
    """Append records to a JSONL file: one ``write`` per line, under ``flock``, flushed and fsynced.

    If the file ends in a torn line (a writer died mid-line), a newline is written first so
    the torn fragment stays a line of its own and the new record is intact.
    """
    items = [records] if isinstance(records, Record) else list(records)
    lines = [(rec.to_json() + "\n").encode() for rec in items]  # every line checked before any is written
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never through a link
    try:
        locked = lock_file(fd)
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    needs_newline = f.read(1) != b"\n"
                if needs_newline:
                    os.write(fd, b"\n")
            for line in lines:
                os.write(fd, line)
            os.fsync(fd)
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass
class ReadResult:
    records: list[Record]
    problems: list[str]  # one line per unreadable line: torn or corrupt, with its line number
    unreadable: list[str] = field(default_factory=list)  # those lines as they stand in the file


def read(path: str | os.PathLike[str]) -> ReadResult:
    """Read every intact record; unreadable lines are reported in ``problems``, never fatal.

    Raises ``BadInputError`` for a missing file or a record from a newer schema version.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"no records file at {path}: give a run directory, one a suite's run wrote (records.jsonl)")
    records: list[Record] = []
    problems: list[str] = []
    unreadable: list[str] = []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    last_complete = raw.endswith(b"\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = i == len(lines) and not last_complete
        try:
            d = json.loads(line, parse_constant=_no_constant)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
        except RecursionError:
            problems.append(f"{path}:{i}: unreadable line skipped ({len(line)} bytes): nested too deeply")
            unreadable.append(line.decode(errors="replace"))
            continue
        except _NonFinite as e:
            problems.append(f"{path}:{i}: invalid record skipped: {_where_non_finite(line)}: {e}")
            unreadable.append(line.decode(errors="replace"))
            continue
        except (ValueError, UnicodeDecodeError) as e:
            what = "torn last line" if torn else "unreadable line"
            problems.append(f"{path}:{i}: {what} skipped ({len(line)} bytes): {str(e)[:80]}")
            unreadable.append(line.decode(errors="replace"))
            continue
        version = d.get("schema_version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise BadInputError(
                f"{path}:{i}: record schema version {version} is newer than this diffbench's "
                f"({SCHEMA_VERSION}); upgrade diffbench to read it"
            )
        try:
            records.append(Record.from_dict(d))
        except (TypeError, ValueError, OverflowError) as e:
            problems.append(f"{path}:{i}: invalid record skipped: {e}")
            unreadable.append(line.decode(errors="replace"))
    return ReadResult(records, problems, unreadable)
