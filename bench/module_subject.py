"""A user's own ``nn.Module`` as a subject: the protocol through which a research codebase is benchmarked from
the Python API without writing a family or a plugin (``diffbench.benchmark_module``).

The protocol: the module is called as ``model(**inputs(batch_size, device, dtype))``, where ``inputs``
is given to ``benchmark_module`` or is the module's own ``diffbench_inputs(batch_size, device, dtype)``
method, returning a dict of tensors (a denoiser's ``x``, ``t``, ``y`` or ``context``). It is counted
(parameters, and GMACs of one call at batch 1 by torch's flop counter) and timed and measured for
memory like any backbone, in eval mode (the module's own modes are restored after). It runs in the calling
process: a module object cannot be sent to a fresh one, so there is no timeout and an abort ends the caller
(suites' cases are isolated; this is not).
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffbench.bench import precision as prec
from diffbench.bench.cases import records as case_records
from diffbench.bench.measure import measure as measure_subject
from diffbench.bench.run_dir import RunLock
from diffbench.bench.settings import DEFAULTS, MEASURES, SUITE_NAME
from diffbench.bench.spec import BackboneRef, CaseSpec, case_spec
from diffbench.bench.subjects import Evaluation, Held
from diffbench.core import records
from diffbench.core.errors import CaseUnsupported, ConfigError
from diffbench.core.files import output_dir
from diffbench.core.records import Record
from diffbench.metrics.counting import count_flops, count_params, eval_mode, flops_to_gmacs
from diffbench.metrics.device import resolve_device
from diffbench.metrics.reading import Reading

Inputs = Callable[[int, torch.device, torch.dtype], dict[str, torch.Tensor]]
# what an allocation that cannot be made raises on the CPU (a RuntimeError, not OutOfMemoryError) and on CUDA
OUT_OF_MEMORY = re.compile(r"DefaultCPUAllocator|not enough memory|out of memory", re.IGNORECASE)


def inputs_of(model: nn.Module, inputs: Inputs | None) -> Inputs:
    if inputs is not None:
        if not callable(inputs):
            raise ConfigError("inputs must be a function (batch_size, device, dtype) -> dict of tensors")
        return inputs
    own = getattr(model, "diffbench_inputs", None)
    if not callable(own):
        raise ConfigError(f"{type(model).__name__} has no diffbench_inputs(batch_size, device, dtype) method; pass "
                          "inputs=, a function returning the keyword arguments of one call")
    return own


class ModuleSubject:
    """Counts, speed and memory of a user's module; it is not trained or sampled here."""

    dataset = "none"
    detector = "none"
    cond = "none"
    num_classes = 0

    def __init__(self, model: nn.Module, inputs: Inputs, spec: CaseSpec) -> None:
        self.model, self.inputs, self.spec = model, inputs, spec

    def _call_inputs(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        got = self.inputs(batch, device, dtype)
        if not isinstance(got, dict) or not all(isinstance(k, str) for k in got):
            raise ConfigError(f"inputs({batch}, ...) returned {type(got).__name__}; it must return a dict of keyword "
                              "arguments for one call of the module")
        return got

    def counts(self) -> dict[str, Reading]:
        p = count_params(self.model)
        device = next((q.device for q in self.model.parameters()), torch.device("cpu"))
        args = self._call_inputs(1, device, torch.float32)
        with eval_mode(self.model) as model:
            flops = count_flops(lambda: model(**args))
        return {"params": Reading(p.total, "count", extra={"by_module": p.by_module}),
                "params_trainable": Reading(p.trainable, "count"),
                "model_bytes": Reading(p.bytes, "bytes"),
                "gmacs": Reading(flops_to_gmacs(flops), "GMAC",
                                 extra={"convention": "FlopCounterMode/2, batch 1, one call, eval mode, "
                                                      "fused fast paths off"}),
                "flops": Reading(flops, "FLOP")}

    def flops_per_image(self, counts: dict[str, Reading]) -> float | None:
        return None if counts.get("flops") is None else counts["flops"].value

    def evaluations(self) -> list[Evaluation]:
        device = torch.device(self.spec.device)
        model = self.model.to(device).eval()  # benchmark() restores the caller's mode
        args = self._call_inputs(self.spec.batch_size, device, torch.float32)
        return [Evaluation(lambda: model(**args), self.spec.batch_size)]

    def breakdown(self, calls: int) -> dict[str, Reading]:
        return {}

    def train(self, out_dir: str, stop_after: int | None = None) -> dict[str, Any]:
        raise CaseUnsupported("a user's module is measured as it is; train it in its own codebase")

    def reference_images(self) -> torch.Tensor:
        raise CaseUnsupported("a user's module has no dataset here")

    def sample(self, n: int, held: Held) -> torch.Tensor:
        raise CaseUnsupported("a user's module is not sampled here")


def _measure(model: nn.Module, call: Inputs, label: str, settings: Any, run_dir: Path, batch_sizes: tuple[int, ...],
             precision: str, device: str) -> None:
    """Each batch size's case, counted and measured in this process, its records appended."""
    run_id = uuid.uuid4().hex[:12]
    ref = BackboneRef(label, "user", {"class": f"{type(model).__module__}.{type(model).__qualname__}"})
    measure = settings.measurement.measure
    with eval_mode(model):  # counted and timed in eval mode; the caller's module keeps its own mode after
        for batch in batch_sizes:
            # in this process: no out-of-memory retry in a fresh process
            spec = case_spec(ref, settings, batch_size=batch, precision=precision, device=device, cond="none",
                             classes=0, oom_retry=False)
            started = records.utc_now()
            subject = ModuleSubject(model, call, spec)
            t0 = time.perf_counter()
            try:
                readings = subject.counts() if "counts" in measure else {}
                if {"speed", "memory", "energy"} & set(measure):
                    readings.update(measure_subject(subject, spec, readings))
            except (torch.OutOfMemoryError, RuntimeError) as e:  # the batch does not fit: an oom row, as in suites
                if not isinstance(e, torch.OutOfMemoryError) and not OUT_OF_MEMORY.search(str(e)):
                    raise
                records.append(run_dir / "records.jsonl", Record(
                    run_id, spec.case_id, "module", spec.to_json(), "case", None, "", status="oom",
                    error=f"out of memory at batch {batch}: {' '.join(str(e).split())[:200]}", case_size=1))
                continue
            readings.setdefault("case_wall_s", Reading(time.perf_counter() - t0, "s"))
            records.append(run_dir / "records.jsonl",
                           case_records(spec, run_id, "module", spec.case_id, started, readings))


def benchmark(model: nn.Module, inputs: Inputs | None, name: str | None, out: str | Path | None,
              batch_sizes: tuple[int, ...], precision: str, device: str, warmup: int, repeats: int,
              min_time_s: float, measure: tuple[str, ...]) -> Path:
    """``diffbench.benchmark_module``: one case per batch size, in this process, recorded in a run directory (its
    path returned) like a suite's cases."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}; wrap a function in a module "
                          "whose forward calls it")
    label = name or type(model).__name__
    if not SUITE_NAME.fullmatch(label):
        raise ConfigError(f"name {label!r}: a plain name (letters, digits, . _ -), it names the run")
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes {batch_sizes!r}: positive integers")
    if precision not in prec.PRECISIONS:
        raise ConfigError(f"precision {precision!r}: one of {', '.join(prec.PRECISIONS)}")
    bad = [m for m in measure if m not in MEASURES or m in ("train", "quality")]
    if bad:
        raise ConfigError(f"measure {bad[0]!r}: a module is measured for counts, speed, memory or energy")
    call = inputs_of(model, inputs)
    device = resolve_device(device)
    settings = DEFAULTS.updated({"warmup": warmup, "repeats": repeats, "min_time_s": min_time_s,
                                 "measure": tuple(measure)})  # checked: NaN or infinite timings refused
    run_dir = output_dir(out if out is not None else f"runs/module-{label}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    with RunLock(run_dir):  # one writer per run directory, as for a suite's run
        if (run_dir / "records.jsonl").exists():
            raise ConfigError(f"{run_dir} already holds records; choose another out")
        _measure(model, call, label, settings, run_dir, batch_sizes, precision, device)
    return run_dir
