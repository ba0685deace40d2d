"""Repetitions: one case measured in several fresh processes, merged into one record per metric.

Timings on a shared machine move between processes by far more than within one (thread
placement, frequency, memory layout: two runs of ``ci-cpu`` at one commit moved by -23% to +19%
on this project's CPU while each run's own samples were tight), so a test on one process's
samples finds "significant" changes that are only a new process. The unit a regression gate
must compare is the process, as google/benchmark does with ``--benchmark_repetitions``: each
repetition is a fresh process, its median is one observation, and ``diffbench compare`` tests
the repetitions' values against each other.

A merged record keeps every raw sample (concatenated), takes the median of the repetitions'
values as its value, and lists those values in ``extra["repetitions"]``. Values equal in every
repetition (counts, deterministic losses and FIDs) are kept as they are.
"""

from __future__ import annotations

import dataclasses
import statistics

from diffbench.core.records import Record


class RepetitionMismatch(ValueError):
    """Repetitions of one case that did not write the same metrics (a bug, or a flaky case)."""


def merge(repetitions: list[list[Record]]) -> list[Record]:
    """One record per metric from the records of each repetition (each a list, in the case's order)."""
    if len(repetitions) == 1:
        return repetitions[0]
    names = [[r.metric for r in recs] for recs in repetitions]
    if any(n != names[0] for n in names[1:]):
        other = next(n for n in names if n != names[0])
        raise RepetitionMismatch(f"repetitions wrote different metrics: {names[0]} vs {other}")
    merged = []
    for group in zip(*repetitions, strict=True):
        first = group[0]
        values = [r.value for r in group]
        if any(r.status != "ok" for r in group) or any(v is None for v in values) or len(set(values)) == 1:
            merged.append(first)
            continue
        samples = [s for r in group for s in r.samples] if all(r.samples for r in group) else None
        merged.append(dataclasses.replace(first, value=float(statistics.median(values)),  # type: ignore[arg-type]
                                          samples=samples, extra={**first.extra, "repetitions": values}))
    return merged
