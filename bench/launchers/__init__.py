"""Launchers: where a suite's cases run when it is not this process's own workers.

- ``local`` (:class:`diffbench.bench.runner.Runner`): this machine, one case at a time or one per
  device (``--devices``);
- ``submitit`` (:mod:`.submitit_launcher`): a Slurm job array, or submitit's local executor where
  no Slurm is found;
- ``ray`` (:mod:`.ray_launcher`): one Ray task per case, with its GPU requirement.

Every launcher runs a case the same way (:func:`diffbench.bench.launchers.jobs.run_job`: each
repetition in a fresh process, statuses, timeouts and OOM retry as on one machine), and only the
driver writes ``records.jsonl``: jobs hand their records over in a file of their own, written
atomically (shared filesystems such as NFS may not honour ``flock``), or as the task's result.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from diffbench.bench.launchers.driver import Driver
from diffbench.bench.launchers.ray_launcher import RayBackend
from diffbench.bench.launchers.submitit_launcher import SubmititBackend
from diffbench.core.errors import ConfigError

LAUNCHERS = ("local", "submitit", "ray")
FLAGS = {"partition": "partition", "gpus_per_case": "gpus-per-case", "cpus_per_case": "cpus-per-case",
         "max_parallel": "max-parallel", "time_limit_min": "time-limit", "address": "ray-address"}
OPTIONS = {"submitit": {"partition", "gpus_per_case", "cpus_per_case", "max_parallel", "time_limit_min", "cluster",
                        "poll_s"},
           "ray": {"address", "gpus_per_case", "cpus_per_case", "max_parallel", "num_cpus", "poll_s"}}


def launch(launcher: str, suite: Any, cases: list[Any], run_dir: Path, timeout: float | None, progress: bool,
           resume: bool, keep_failed: bool, options: dict[str, Any]) -> Any:
    if launcher not in OPTIONS:
        raise ConfigError(f"launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    unknown = sorted(set(options) - OPTIONS[launcher])
    if unknown:
        flag = FLAGS.get(unknown[0], unknown[0])
        raise ConfigError(f"launcher {launcher} takes no option {unknown[0]!r} (--{flag}); it takes "
                          + ", ".join(sorted(OPTIONS[launcher])))
    if launcher == "submitit" and not options.get("time_limit_min"):  # the longest case's timeout, plus 10 min
        longest = max((timeout or c.spec.timeout_s) * c.spec.repetitions for c in cases) if cases else 0
        options = {**options, "time_limit_min": math.ceil(longest / 60) + 10}

    spread = [c for c in cases if c.spec.placement.nodes > 1]
    if launcher == "ray" and spread:
        raise ConfigError(f"case {spread[0].name} spans {spread[0].spec.placement.nodes} machines (nodes): that is "
                          "--launcher submitit's (one Slurm task per rank); a Ray task runs on one machine")
    if launcher == "submitit":
        backend: Any = SubmititBackend(run_dir, options)
    else:
        backend = RayBackend(run_dir, options)
    return Driver(suite, cases, run_dir, backend, timeout, progress, int(options.get("max_parallel") or 0),
                  float(options.get("poll_s") or 1.0)).run(resume, keep_failed)
