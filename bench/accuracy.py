"""Accuracy gates (as in MLPerf's SDXL benchmark): a suite's ``accept`` table maps a metric to the band
``[low, high]`` its value must land in, so that a faster configuration that broke the images cannot pass.

A case outside a band keeps every record it measured and gets one more: a ``case`` row with status
``inaccurate`` naming the value and the band. A band whose metric the case did not measure fails the
same way (a gate that cannot be checked is not passed). ``diffbench compare`` treats a case that was
ok and is now inaccurate as broken, and the report lists it with the failed cases.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from diffbench.core.records import Record
from diffbench.metrics.specs import METRICS, MetricKey, base_name

Band = tuple[str, float, float]


def check_bands(raw: Any) -> str | None:
    """None when ``raw`` is a valid ``accept`` table, else what is wrong with it."""
    if not isinstance(raw, dict) or not raw:
        return "a table of metric = [low, high]"
    for name, band in raw.items():
        key = MetricKey.read(name) if isinstance(name, str) else None
        if key is None or key.base not in METRICS:  # checked when the suite is read, not after the sampling
            return f"{name}: not a metric (see 'diffbench list metrics': fid, latency_ms, ... or one qualified by its "\
                   "detector)"
        ok = (isinstance(band, list) and len(band) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in band))
        if not ok:
            return f"{name} = [low, high], two finite numbers (got {band!r})"
        if band[0] > band[1]:
            return f"{name}: low {band[0]} above high {band[1]}"
    return None


def bands(raw: dict[str, list[float]] | None) -> tuple[Band, ...]:
    return tuple(sorted((str(k), float(v[0]), float(v[1])) for k, v in (raw or {}).items()))


def gate(accept: tuple[Band, ...], recs: list[Record]) -> list[Record]:
    """The case's records, each gated metric marked with its band, plus an ``inaccurate`` row when a value
    is outside its band or was not measured."""
    if not accept or not recs:
        return recs
    problems: list[str] = []
    marked = list(recs)
    for name, low, high in accept:
        exact = [i for i, r in enumerate(marked) if r.metric == name]
        family = [i for i, r in enumerate(marked) if base_name(r.metric) == name]
        found = exact or family  # "fid" gates fid[digits] when that is the one FID the case measured
        usable = [i for i in found if marked[i].status == "ok" and marked[i].value is not None]
        if len(usable) > 1:
            names = ", ".join(marked[i].metric for i in usable)
            problems.append(f"accept names {name}, which matches {names}; name one of them")
            continue
        if not usable:
            why = marked[found[0]].error if found and marked[found[0]].error else "not measured by this case"
            problems.append(f"{name} has no value ({why}), so its band [{low:g}, {high:g}] cannot be checked")
            continue
        i = usable[0]
        r = marked[i]
        value = float(r.value)  # type: ignore[arg-type]
        inside = low <= value <= high
        marked[i] = dataclasses.replace(r, extra={**r.extra, "accept": [low, high], "accepted": inside})
        if not inside:
            problems.append(f"{r.metric} {value:.6g} outside its band [{low:g}, {high:g}]")
    if not problems:
        return marked
    size = len(marked) + 1
    first = marked[0]
    row = Record(first.run_id, first.case_id, first.suite, first.config, "case", None, "", status="inaccurate",
                 error="; ".join(problems)[:500], extra={"accept": {n: [lo, hi] for n, lo, hi in accept}},
                 provenance=first.provenance, case_size=size)
    return [dataclasses.replace(r, case_size=size) for r in marked] + [row]


def case_status(recs: list[Record]) -> str:
    """One status for a case's records: inaccurate beats ok; ok when anything was measured."""
    statuses = [r.status for r in recs]
    if "inaccurate" in statuses:
        return "inaccurate"
    return "ok" if "ok" in statuses else statuses[0]
