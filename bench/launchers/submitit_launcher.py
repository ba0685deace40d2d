"""``--launcher submitit``: the cases as a submitit job array on Slurm, or through submitit's local
executor where no Slurm is found (how it is tested on one machine).

Each job is a :class:`CaseJob`, a ``submitit.helpers.Checkpointable``: when Slurm preempts it or its
time limit nears (SIGUSR2, ``slurm_signal_delay_s`` before it), the case's training writes its checkpoint
and stops, and submitit requeues the job, which continues from that checkpoint (``RUN_DIR/cases/CASE_ID``).
On Slurm the array's own throttle (``%K``) keeps ``--max-parallel``; the local executor has none, so
the driver submits at most K jobs at a time there.
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from typing import Any

from diffbench.bench.launchers.driver import Ended
from diffbench.bench.launchers.jobs import preempt_running, run_job
from diffbench.bench.spec import CaseSpec
from diffbench.core.errors import ConfigError

ALIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING", "UNKNOWN"}
CANCELLED_SLURM = {"CANCELLED", "PREEMPTED", "REVOKED", "DEADLINE", "TIMEOUT", "INTERRUPTED"}


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher submitit needs submitit: pip install -e '.[slurm]' "
                          "(or pip install submitit)") from None
    return submitit


class CaseJob:
    """The callable a job runs: one case (see :func:`diffbench.bench.launchers.jobs.run_job`). Made
    checkpointable at run time, so that importing this module does not need submitit."""

    def __call__(self, job: dict[str, Any]) -> list[str]:
        return run_job(job, _where(), _ranks())

    def checkpoint(self, job: dict[str, Any]) -> Any:
        """Preempted or out of time: the running case writes its training checkpoint and stops, then the same case
        is requeued (submitit resubmits it as the same job) and continues from that checkpoint."""
        import submitit

        preempt_running()
        return submitit.helpers.DelayedSubmission(CaseJob(), job)


def _ranks() -> dict[str, str] | None:
    """In a job whose tasks are a case's ranks (srun started one per device, on every node): this task's
    torch.distributed environment, rank 0's node as the rendezvous (every device of the node stays visible: the
    rank takes cuda:LOCAL_RANK)."""
    import submitit

    try:
        if submitit.JobEnvironment().num_tasks < 2:
            return None
    except RuntimeError:
        return None
    env = submitit.helpers.TorchDistributedEnvironment()
    return {"RANK": str(env.rank), "WORLD_SIZE": str(env.world_size), "LOCAL_RANK": str(env.local_rank),
            "LOCAL_WORLD_SIZE": str(env.local_world_size), "MASTER_ADDR": env.master_addr,
            "MASTER_PORT": str(env.master_port)}


def _where() -> dict[str, Any]:
    """The job's identity, for the records' provenance."""
    import submitit

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return {}
    where: dict[str, Any] = {"job_id": str(env.job_id), "node": env.hostname, "rank": env.global_rank,
                             "world_size": env.num_tasks, "cluster": env.cluster}
    if env.array_job_id is not None:
        where["array_job_id"], where["array_task_id"] = str(env.array_job_id), str(env.array_task_id)
    return where


class SubmititBackend:
    name = "submitit"

    def __init__(self, run_dir: Path, options: dict[str, Any]) -> None:
        submitit = _submitit()
        self.folder = run_dir / "submitit"
        self.executor = submitit.AutoExecutor(folder=str(self.folder), cluster=options.get("cluster"))
        self.cluster = self.executor.cluster
        self.options = options
        self.throttles_itself = self.cluster == "slurm"
        self.executor.update_parameters(**self.parameters(options))

    def parameters(self, options: dict[str, Any]) -> dict[str, Any]:
        """What every job is submitted with (the sbatch options on Slurm)."""
        limit = options.get("time_limit_min") or 60 * 24
        params: dict[str, Any] = {"name": "diffbench", "timeout_min": math.ceil(limit),
                                  "tasks_per_node": 1, "nodes": 1}
        if options.get("gpus_per_case") is not None:  # per node, for a case that spans nodes
            params["gpus_per_node"] = int(options["gpus_per_case"])
        if options.get("cpus_per_case") is not None:
            params["cpus_per_task"] = int(options["cpus_per_case"])
        if self.cluster == "slurm":
            if options.get("partition"):
                params["slurm_partition"] = options["partition"]
            if options.get("max_parallel"):
                params["slurm_array_parallelism"] = int(options["max_parallel"])
            params["slurm_signal_delay_s"] = 120  # USR2 two minutes before the limit: requeue (checkpoint)
        elif options.get("partition"):
            raise ConfigError(f"--partition {options['partition']}: no Slurm here (submitit chose its "
                              f"{self.cluster} executor)")
        return params

    def threads(self, max_parallel: int) -> int | None:
        if self.cluster == "slurm":
            return int(self.options["cpus_per_case"]) if self.options.get("cpus_per_case") else None
        return max(1, (os.cpu_count() or 1) // max(1, max_parallel))  # local: the jobs share this machine

    def submit(self, payloads: list[dict[str, Any]], max_parallel: int) -> list[tuple[str, Any]]:
        """Each case as a job; a case of several ranks (devices_per_case x nodes) as one job of that many tasks,
        devices_per_case on each of its nodes (an array per placement on Slurm)."""
        jobs: dict[int, Any] = {}
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(payloads):
            where = CaseSpec.from_json(p["spec"]).placement
            groups.setdefault((where.nodes, where.devices_per_case), []).append(i)
        for (nodes, per_node), idx in groups.items():
            self.executor.update_parameters(**{**self.parameters(self.options), "nodes": nodes,
                                               "tasks_per_node": per_node})
            batch = [payloads[i] for i in idx]
            if self.cluster == "slurm" and len(batch) > 1:
                submitted = self.executor.map_array(CaseJob(), batch)
            else:
                submitted = [self.executor.submit(CaseJob(), p) for p in batch]
            jobs.update(zip(idx, submitted, strict=True))
        return [(str(jobs[i].job_id), jobs[i]) for i in range(len(payloads))]

    def poll(self, job: Any) -> Ended | None:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        if not job.done():
            return None
        try:
            return Ended(job.results()[0])  # a case of several tasks: rank 0's (the others hand nothing over)
        except UncompletedJobError as e:  # cancelled, preempted without requeue, node lost, killed
            state = str(getattr(job, "state", "UNKNOWN")).split()[0].upper()
            status = "cancelled" if state in CANCELLED_SLURM or self.cluster != "slurm" else "crash"
            return Ended(None, status, f"job {job.job_id} ended ({state}) without handing over its records: "
                                       f"{_first_line(e)}")
        except FailedJobError as e:
            text = str(e)
            status = "cancelled" if "KeyboardInterrupt" in text or "SIGTERM" in text else "error"
            return Ended(None, status, f"job {job.job_id} failed: {_last_line(text)}")

    def reattach(self, entry: dict[str, Any]) -> Any | None:
        """A job of a previous driver that is still queued or running, as a handle to wait on; else None."""
        job_id = str(entry.get("job_id", ""))
        if not job_id or entry.get("launcher") != self.name:
            return None
        if self.cluster == "slurm":
            import submitit

            job: Any = submitit.SlurmJob(folder=str(self.folder), job_id=job_id)
            return job if str(job.state).upper() in ALIVE_SLURM else None
        return _LocalOrphan(job_id) if _local_job_alive(job_id) else None

    def close(self) -> None:
        pass


class _LocalOrphan:
    """A local-executor job started by a driver that is gone: its controller is no child of ours, so it is
    watched through its pid; it is done when its process is."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def done(self) -> bool:
        return not _local_job_alive(self.job_id)

    def results(self) -> list[list[str]]:
        return [self.result()]

    def result(self) -> list[str]:
        from submitit.core.utils import UncompletedJobError

        raise UncompletedJobError(f"job {self.job_id} (started by an earlier driver) ended without a result here")

    @property
    def state(self) -> str:
        return "RUNNING" if _local_job_alive(self.job_id) else "FINISHED"


def _local_job_alive(job_id: str) -> bool:
    if not job_id.isdigit():
        return False
    try:
        os.kill(int(job_id), 0)
        cmdline = Path(f"/proc/{job_id}/cmdline").read_bytes()
    except (OSError, ProcessLookupError):
        return False
    return b"submitit" in cmdline and b"<defunct>" not in cmdline


def cancel_local(job_id: str) -> None:
    """What ``scancel`` is to Slurm, for a local-executor job: its controller forwards the signal."""
    os.kill(int(job_id), signal.SIGINT)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"
