"""The case executor, run inside the case's own process: one path for every subject.

Train and score (``train`` / ``quality``), count (``counts``), then measure speed, memory and
energy (``speed`` / ``memory`` / ``energy``) — each step over the subject contract — and turn
every reading into a record, checked against the metric registry.
"""

from __future__ import annotations

import time

import torch

from diffbench.bench import faults, precision
from diffbench.bench.backbone_subject import BackboneSubject
from diffbench.bench.diffusers_subject import DiffusersSubject
from diffbench.bench.evaluate import score_pretrained, train_and_score
from diffbench.bench.measure import measure
from diffbench.bench.pipeline_subject import PipelineSubject
from diffbench.bench.provenance import collect
from diffbench.bench.spec import CaseSpec, DiffusersRef, PipelineRef
from diffbench.bench.subjects import Subject
from diffbench.core import distributed
from diffbench.core.records import Record, stamp, utc_now
from diffbench.metrics.reading import Reading
from diffbench.metrics.specs import check, metric_name
from diffbench.models import external


def subject_for(spec: CaseSpec) -> Subject:
    """The subject that measures a case: a pipeline, a diffusers directory or a backbone."""
    if isinstance(spec.model, PipelineRef):
        return PipelineSubject(spec)
    if isinstance(spec.model, DiffusersRef):
        return DiffusersSubject(spec)
    external.ensure(spec.model.origin)  # a family from outside: imported in this fresh process, as expanded
    return BackboneSubject(spec)



def execute(spec: CaseSpec, run_id: str, suite: str, case_id: str, name: str) -> list[Record]:
    """Measure one case; exceptions propagate to the caller, which turns them into a status row."""
    started, t_start = utc_now(), time.perf_counter()
    faults.maybe_inject(name)
    torch.manual_seed(spec.seed)
    subject = subject_for(spec)
    readings: dict[str, Reading] = {}
    if spec.protocol is not None:  # a system that arrives trained, scored by the suite's protocol

        readings.update(score_pretrained(subject, spec, case_id))
    elif spec.measures("train", "quality"):  # trained here to its budget (and scored on its dataset)

        readings.update(train_and_score(subject, spec))
        if not distributed.current().is_writer:  # the other ranks of a data-parallel case only train
            return []
    phases = spec.measures("train", "quality")  # where a training or scoring case's time went
    t0 = time.perf_counter()
    counts = subject.counts() if spec.measures("counts") else {}
    readings.update(counts)
    if counts and phases:
        readings[metric_name("phase_seconds", "counts")] = Reading(time.perf_counter() - t0, "s")
    if spec.measures("speed", "memory", "energy"):
        t0 = time.perf_counter()
        readings.update(measure(subject, spec, counts))
        if phases:
            readings[metric_name("phase_seconds", "measure")] = Reading(time.perf_counter() - t0, "s")
    if phases:
        readings[metric_name("phase_seconds", "total")] = Reading(time.perf_counter() - t_start, "s")
    return records(spec, run_id, suite, case_id, started, readings)


def records(spec: CaseSpec, run_id: str, suite: str, case_id: str, started: str,
            readings: dict[str, Reading]) -> list[Record]:
    """One record per reading, each metric and unit checked against the registry (a mismatch is a bug)."""
    prov = collect(spec.device, precision.flags(spec.precision, spec.attention, spec.compile, spec.channels_last),
                   spec.seed, started)
    config, out = spec.to_json(), []
    for metric, r in readings.items():
        check(metric, r.unit)
        rec = Record(run_id, case_id, suite, config, metric, r.value, r.unit,
                     status="ok" if r.available else "unsupported", error=r.reason, samples=r.samples,
                     extra=r.extra, case_size=len(readings))
        out.append(stamp(rec, prov))
    return out
