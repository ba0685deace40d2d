"""``--launcher ray``: one Ray task per case, with its GPU and CPU requirement, on the cluster at
``--ray-address`` or on a Ray started for the run on this machine.

A task returns its case's records (the driver appends them), so no shared filesystem is needed. Ray
tasks belong to the driver: if the driver dies they die with it, and ``--resume`` runs their cases again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from diffbench.bench.launchers.driver import Ended
from diffbench.bench.launchers.jobs import run_job
from diffbench.core.errors import ConfigError


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--launcher ray needs ray: pip install -e '.[ray]' (or pip install 'ray[default]')") from None
    return ray


def run_case_task(job: dict[str, Any]) -> list[str]:
    """The body of a Ray task: one case, its records returned."""
    import ray

    ctx = ray.get_runtime_context()
    where: dict[str, Any] = {"job_id": ctx.get_job_id(), "task_id": ctx.get_task_id(), "node_id": ctx.get_node_id()}
    gpus = ray.get_gpu_ids()
    if gpus:
        where["gpu_ids"] = [str(g) for g in gpus]
    return run_job(job, where)


class RayBackend:
    name = "ray"
    throttles_itself = False  # the driver keeps --max-parallel tasks in flight

    def __init__(self, run_dir: Path, options: dict[str, Any]) -> None:
        ray = _ray()
        self.ray = ray
        self.options = options
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "ignore_reinit_error": True}
            if options.get("address"):
                kwargs["address"] = options["address"]
            else:
                kwargs["num_cpus"] = int(options.get("num_cpus") or os.cpu_count() or 1)
            try:
                ray.init(**kwargs)
            except ConnectionError as e:
                raise ConfigError(f"--ray-address {options.get('address')}: cannot join the Ray cluster "
                                  f"({e}); start it with 'ray start --head' or omit --ray-address") from None
        self.remote = ray.remote(run_case_task).options(
            num_cpus=float(options.get("cpus_per_case") or 1), num_gpus=float(options.get("gpus_per_case") or 0),
            max_retries=0)

    def threads(self, max_parallel: int) -> int | None:
        return int(self.options["cpus_per_case"]) if self.options.get("cpus_per_case") else None

    def submit(self, payloads: list[dict[str, Any]], max_parallel: int) -> list[tuple[str, Any]]:
        refs = [self.remote.remote(p) for p in payloads]
        return [(ref.task_id().hex(), ref) for ref in refs]

    def poll(self, ref: Any) -> Ended | None:
        ray = self.ray
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            return Ended(ray.get(ref))
        except ray.exceptions.TaskCancelledError as e:
            return Ended(None, "cancelled", f"the Ray task was cancelled: {str(e).strip().splitlines()[0][:300]}")
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.LocalRayletDiedError,
                ray.exceptions.ObjectLostError) as e:
            return Ended(None, "crash", f"the Ray task's worker or node died: {type(e).__name__}")
        except ray.exceptions.RayError as e:
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            return Ended(None, "error", f"the Ray task failed: {lines[-1][:300] if lines else type(e).__name__}")

    def reattach(self, entry: dict[str, Any]) -> Any | None:
        return None  # a Ray task dies with its driver

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
