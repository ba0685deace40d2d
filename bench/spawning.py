"""Starting a case's process: the environment it inherits, and nothing of the caller's script in it."""

from __future__ import annotations

import contextlib
import multiprocessing.spawn as spawn
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def without_user_main() -> Iterator[None]:
    """A case's process runs diffbench's code only. multiprocessing's spawn would first re-run the caller's
    script in it (as ``__mp_main__``), so a script calling ``diffbench.run(...)`` without an
    ``if __name__ == "__main__":`` guard would start the run again inside every case; the case needs
    nothing from that script (its target and arguments are diffbench's and plain data)."""
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


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in os.environ for the duration (a spawned process inherits it at start)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
