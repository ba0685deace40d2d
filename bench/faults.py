"""Fault injection, a testing hook for the runner's isolation (and for users checking their setup).

``DIFFBENCH_INJECT_FAULTS='{"GLOB": "raise|abort|hang|oom", ...}'`` makes every case whose
name matches GLOB fail that way inside its own process, before it measures anything.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time

import torch

ENV = "DIFFBENCH_INJECT_FAULTS"
KINDS = ("raise", "abort", "hang", "oom")


def maybe_inject(case_name: str) -> None:
    raw = os.environ.get(ENV)
    if not raw:
        return
    for pattern, kind in json.loads(raw).items():
        if fnmatch.fnmatchcase(case_name, pattern):
            _fail(kind)


def _fail(kind: str) -> None:
    if kind == "raise":
        raise RuntimeError("injected fault: raise")
    if kind == "abort":
        os.abort()  # the process dies by SIGABRT: no exception reaches Python
    if kind == "hang":
        while True:
            time.sleep(1)
    if kind == "oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (injected fault)")
    raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
