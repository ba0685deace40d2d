"""One case, run inside its own process: build, count, time, measure memory and energy -> records."""

from __future__ import annotations

import time
from typing import Any

import torch

from bench import faults, precision
from bench.provenance import collect, utc_now
from bench.records import Record, stamp
from metrics.reading import Reading

ENERGY_WINDOW_S = 1.0  # the NVML energy counter updates every ~20-100 ms: measure over at least 1 s


def _config(family: Any, d: dict[str, Any]) -> Any:
    import dataclasses

    kinds = {f.name: f.type for f in dataclasses.fields(family.config_cls)}
    return family.config_cls(**{k: tuple(v) if isinstance(v, list) and "tuple" in str(kinds.get(k)) else v
                                for k, v in d.items()})


def _count(config: Any) -> dict[str, Reading]:
    import models

    c = models.count(config)
    return {"params": Reading(c.params, "count", extra={"by_module": c.params_by_module}),
            "params_trainable": Reading(c.params_trainable, "count"),
            "gmacs": Reading(c.gmacs, "GMAC", extra={"convention": "FlopCounterMode/2, batch 1, one evaluation"}),
            "flops": Reading(c.flops, "FLOP")}


def _speed(case: dict[str, Any], family: Any, config: Any, flops: int | None) -> dict[str, Reading]:
    from metrics import energy, memory, mfu
    from metrics.timing import time_calls

    device, batch = case["device"], case["batch_size"]
    model = config.build().to(device).eval()
    inputs = family.make_inputs(config, batch, torch.device(device), torch.float32)
    if case["channels_last"]:
        if family.name.startswith("unet"):
            model = model.to(memory_format=torch.channels_last)
            inputs["x"] = inputs["x"].contiguous(memory_format=torch.channels_last)
        else:
            raise_unsupported("channels_last applies to the U-Net families")
    net = torch.compile(model) if case["compile"] else model
    out: dict[str, Reading] = {}
    with torch.no_grad(), precision.precision(case["precision"], device, case["attention"]):
        memory.reset_allocator_peak(device)
        with memory.NvmlSampler(device, interval_s=case.get("nvml_interval_s", 0.01)) as sampler:
            t = time_calls(lambda: family.denoise(net, inputs), case["warmup"], case["repeats"], device,
                           case["min_time_s"])
            if "energy" in case["measure"]:
                n = max(1, int(ENERGY_WINDOW_S / max(t.median_ms / 1e3, 1e-6))) if device.startswith("cuda") else 1
                with energy.EnergyMeter(device) as meter:
                    for _ in range(n):
                        family.denoise(net, inputs)
                out.update(meter.readings(images=n * batch))
    stats = t.summary()
    out["latency_ms"] = Reading(t.median_ms, "ms", samples=t.samples_ms, extra=stats)
    out["latency_p10_ms"] = Reading(t.p10_ms, "ms")
    out["latency_p90_ms"] = Reading(t.p90_ms, "ms")
    out["latency_per_image_ms"] = Reading(t.median_ms / batch, "ms")
    out["throughput_img_s"] = Reading(batch / (t.median_ms / 1e3), "images/s")
    includes = "compile" if case["compile"] else "init"
    out["first_call_ms"] = Reading(t.first_call_ms, "ms", extra={"includes": includes})
    if case["compile"]:
        out["compile_ms"] = Reading(max(t.first_call_ms - t.median_ms, 0.0), "ms",
                                    extra={"estimate": "first call minus steady-state median"})
    if "memory" in case["measure"]:
        out.update(memory.allocator_peaks(device))
        out.update(sampler.readings())
        out["cpu_peak_rss_bytes"] = memory.peak_rss_bytes()
    if flops is not None:
        from bench.provenance import device_name

        mode = case["precision"]  # the math mode names of the MFU table are the precision names

        if device.startswith("cuda"):
            out["mfu"] = mfu.mfu(flops * batch, 1e3 / t.median_ms, device_name(device), mode)
        else:
            out["mfu"] = Reading.unavailable("1", "MFU needs a GPU peak; this ran on CPU")
    return out


def raise_unsupported(why: str) -> None:
    from bench.errors import CaseUnsupported

    raise CaseUnsupported(why)


def execute(case: dict[str, Any], run_id: str, suite: str, case_id: str, name: str) -> list[Record]:
    """Measure one case; exceptions propagate to the caller, which turns them into a status row."""
    from models.families import FAMILIES

    started = utc_now()
    faults.maybe_inject(name)
    torch.manual_seed(case["seed"])
    if "pipeline" in case["model"]:
        from bench.pipeline_case import pipeline_readings

        return _records(case, run_id, suite, case_id, started, pipeline_readings(case))
    family = FAMILIES.get(case["model"]["family"])
    config = _config(family, case["model"]["config"])
    readings: dict[str, Reading] = {}
    if "train" in case["measure"]:
        from bench.quality_case import train_and_score

        config, trained = train_and_score(case, family, config)  # the backbone as conditioned for training
        readings.update(trained)
    if "counts" in case["measure"]:
        readings.update(_count(config))
    if {"speed", "memory", "energy"} & set(case["measure"]):
        flops = int(readings["flops"].value) if "flops" in readings else None  # type: ignore[arg-type]
        t0 = time.perf_counter()
        readings.update(_speed(case, family, config, flops))
        readings["case_wall_s"] = Reading(time.perf_counter() - t0, "s")
    return _records(case, run_id, suite, case_id, started, readings)


def _records(case: dict[str, Any], run_id: str, suite: str, case_id: str, started: str,
             readings: dict[str, Reading]) -> list[Record]:
    prov = collect(case["device"], precision.flags(case["precision"], case["attention"], case["compile"],
                                                   case["channels_last"]), case["seed"], started)
    recs = []
    for metric, r in readings.items():
        rec = Record(run_id, case_id, suite, case, metric, r.value, r.unit,
                     status="ok" if r.available else "unsupported", error=r.reason, samples=r.samples,
                     extra=r.extra, case_size=len(readings))
        recs.append(stamp(rec, prov))
    return recs
