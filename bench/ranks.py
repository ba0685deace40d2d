"""A case as ``world_size`` ranks: each rank runs the same case entry point, joins the process group from its
environment (torchrun's RANK, WORLD_SIZE, MASTER_ADDR...), and rank 0 hands the case's records over in one
file, written atomically; the other ranks only train.

The local runner starts a case of one rank as a spawned process (``bench/runner.py``), and a case of
``devices_per_case`` ranks with torchrun (``python -m torch.distributed.run --standalone``) on its devices;
either way the case's working directory (its training checkpoint, kept until the case ends ok, so that a
killed or preempted case continues from it under ``--resume``) is ``RUN_DIR/cases/CASE_ID``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from diffbench.bench.cases import execute
from diffbench.bench.placement import apply_threads
from diffbench.bench.spec import CaseSpec
from diffbench.core import distributed
from diffbench.core.errors import CaseUnsupported
from diffbench.core.files import write_text_atomic
from diffbench.diffusion.preemption import Preempted


def outcome(exc: BaseException) -> tuple[str, str, str]:
    """(status, one-line message, traceback) of what ended a case's process."""
    if isinstance(exc, CaseUnsupported):
        return "unsupported", str(exc), ""
    if isinstance(exc, Preempted):
        return "preempted", str(exc), ""
    oom = type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
    message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return ("oom" if oom else "error"), message[:500], traceback.format_exc()


def rank_main(job_path: str, result_path: str) -> int:
    """The entry point of every rank (``python -m diffbench.bench.ranks JOB RESULT``)."""
    job = json.loads(Path(job_path).read_text())
    world = distributed.from_env()
    try:
        apply_threads()
        spec = CaseSpec.from_json(job["spec"])
        _, device = distributed.init(spec.device)  # cuda:LOCAL_RANK on GPUs: rank 0, the one that records, on cuda:0
        recs = execute(dataclasses.replace(spec, device=device), job["run_id"], job["suite"], job["case_id"],
                       job["name"])
        msg: dict[str, Any] = {"status": "ok", "records": [r.to_json() for r in recs]}
    except BaseException as e:  # noqa: BLE001 - everything becomes a status row
        status, message, tb = outcome(e)
        msg = {"status": status, "message": f"rank {world.rank}: {message}" if world.size > 1 else message,
               "traceback": tb}
    target = Path(result_path) if world.is_writer else Path(f"{result_path}.rank{world.rank}")
    if world.is_writer or msg["status"] != "ok":
        write_text_atomic(target, json.dumps(msg))
    distributed.finish(barrier=msg["status"] == "ok")
    return 0 if msg["status"] == "ok" else 1


def read_result(result_path: Path, world: int) -> dict[str, Any] | None:
    """Rank 0's result, or the first failed rank's, or None (no rank said anything)."""
    for p in [result_path, *(Path(f"{result_path}.rank{r}") for r in range(1, world))]:
        if p.is_file():
            try:
                got = json.loads(p.read_text())
            except ValueError:
                continue
            if p == result_path and got.get("status") == "ok":
                return got  # type: ignore[no-any-return]
            if got.get("status") != "ok":
                return got  # type: ignore[no-any-return]
    return None


def run_ranks(job: dict[str, Any], world: int, work: str | None, timeout: float, env: dict[str, str],
              live: set[Any]) -> tuple[str, Any]:
    """A case on ``world`` ranks of this machine; the ranks' log beside the case's checkpoint, where it has one."""
    with contextlib.ExitStack() as stack:
        folder = Path(work) / "ranks" if work else \
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="diffbench-ranks-")))
        folder.mkdir(parents=True, exist_ok=True)
        return torchrun(job, world, folder, timeout, env, live)


def torchrun(job: dict[str, Any], nproc: int, folder: Path, timeout: float, env: dict[str, str],
             live: set[Any] | None = None) -> tuple[str, Any]:
    """Run a case on ``nproc`` ranks of this machine with torchrun; (status, records or message)."""
    job_path, result = folder / "job.json", folder / "result.json"
    for old in folder.glob("result.json*"):  # an earlier attempt's
        old.unlink()
    job_path.write_text(json.dumps(job))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", str(nproc), "-m", "diffbench.bench.ranks", str(job_path), str(result)]
    log = open(folder / "ranks.log", "w")  # noqa: SIM115 - the ranks' output, kept beside the result
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "OMP_NUM_THREADS": env.get("DIFFBENCH_THREADS", "1")},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)
    t0 = time.monotonic()
    if live is not None:
        live.add(proc)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return "timeout", f"no result within {timeout:g} s; the case's {nproc} ranks were killed"
    except BaseException:
        _kill(proc)
        raise
    finally:
        log.close()
        if live is not None:
            live.discard(proc)
    got = read_result(result, nproc)
    if got is None:
        return "crash", (f"the case's ranks died (torchrun exit code {proc.returncode}, after "
                         f"{time.monotonic() - t0:.0f} s) without a result; see {folder / 'ranks.log'}")
    if got["status"] == "ok":
        return "ok", got["records"]
    return got["status"], got["message"]


def _die_with_parent() -> None:
    """In torchrun's process, before it starts (Linux): SIGTERM when the runner's thread that started it dies, so
    that a killed runner leaves no ranks training on behind it (they checkpoint and stop, as when preempted)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _kill(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1], sys.argv[2]))


def preempt(proc: Any) -> None:
    """Ask a running case to stop at its next step boundary after a checkpoint: SIGUSR2 to a case's own process,
    SIGTERM to torchrun's process group (torchrun forwards it to its ranks, and so does the group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if isinstance(proc, subprocess.Popen):
            os.killpg(proc.pid, signal.SIGTERM)
        elif proc.pid is not None:
            os.kill(proc.pid, signal.SIGUSR2)
