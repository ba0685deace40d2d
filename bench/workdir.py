"""A case's working directory: ``RUN_DIR/cases/CASE_ID``, where its training checkpoint lives until the case
ends ok, so that a killed or preempted case continues from it under ``--resume`` (or when its job is requeued).
The runner names it to the case's process in ``DIFFBENCH_CASE_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

CASE_DIR_ENV = "DIFFBENCH_CASE_DIR"
CASES = "cases"


def case_dir(run_dir: Path | None, case_id: str) -> str | None:
    return str(run_dir / CASES / case_id) if run_dir is not None else None


def working_dir() -> str | None:
    """Inside a case: its persistent working directory (None: a temporary one will do)."""
    return os.environ.get(CASE_DIR_ENV) or None
