"""Preemption: Slurm's warning before a time limit or a requeue (SIGUSR2 with ``--signal``, SIGTERM at
cancellation) asks a training to stop at the next step boundary, after writing its checkpoint.

Every rank of a data-parallel world must stop at the same step, whichever ranks were signalled: the flag is
agreed over the process group (a max all-reduce) at each step boundary.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from diffbench.core import distributed

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR2", None)) if s is not None)


class Preempted(Exception):
    """A training stopped by a signal after writing its checkpoint: the case is to be resumed, not failed."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"preempted at step {step}; checkpoint {checkpoint} written, --resume continues from it")
        self.step, self.checkpoint = step, checkpoint


@contextlib.contextmanager
def preemption() -> Iterator[Callable[[], bool]]:
    """Within: SIGTERM and SIGUSR2 set a flag instead of ending the process; yields ``stop_now()``, True at a step
    boundary once any rank was signalled. Handlers are installed only in the main thread (elsewhere signals
    cannot be caught, and the flag stays down)."""
    raised = {"flag": False}

    def handler(signum: int, frame: object) -> None:
        raised["flag"] = True

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            previous[s] = signal.signal(s, handler)
    world = distributed.current()

    def stop_now() -> bool:
        if world.size > 1:
            return distributed.any_rank(raised["flag"], world)
        return raised["flag"]

    try:
        yield stop_now
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
