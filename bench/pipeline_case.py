"""A pipeline case, run inside its own process like a backbone case: count every component, train
to the suite's budget and score (FID, CLIP score), and time end-to-end sampling with a
per-component breakdown, with and without guidance."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from metrics.reading import Reading


def pipeline_spec(model: dict[str, Any]) -> Any:
    """The spec a case names: a preset at a scale, reshaped to a parameter budget when one is given."""
    from models.pipeline import size_pipeline
    from models.pipelines import PIPELINES

    spec = PIPELINES.get(model["pipeline"]).spec(model["scale"])
    if model.get("budget"):
        spec, _, _ = size_pipeline(spec, float(model["budget"]), model.get("tolerance", 0.03))
    return spec


def _counts(spec: Any, case: dict[str, Any]) -> dict[str, Reading]:
    from models.pipeline import count_pipeline, denoiser_params

    rows = count_pipeline(spec)
    steps, guidance = case.get("sample_steps", spec.steps), case.get("guidance", spec.guidance)
    passes = 2 if guidance != 1.0 and spec.cond != "none" else 1
    # one expert of a stage runs per step (eDiff-I): a stage's per-step cost is its largest expert's
    by_stage: dict[str, float] = {}
    for r in rows:
        if r.per_step:
            key = r.stage or r.name
            by_stage[key] = max(by_stage.get(key, 0.0), r.gmacs)
    per_step = sum(by_stage.values())
    once = sum(r.gmacs for r in rows if not r.per_step)
    by_component = {r.name: {"component": r.component, "params": r.params, "gmacs": r.gmacs} for r in rows}
    note = "denoisers: every stage and expert, and the unCLIP prior; text encoders and the autoencoder apart"
    per_image = once + per_step * steps * passes
    return {
        "params": Reading(denoiser_params(rows), "count", extra={"counts": note, "by_component": by_component}),
        "params_all": Reading(sum(r.params for r in rows), "count", extra={"counts": "every component"}),
        "gmacs": Reading(per_step, "GMAC", extra={"convention": "one step of every stage (and the prior), batch 1; "
                                                                "with experts, the largest runs (one per step)"}),
        "flops": Reading(int(per_step * 2e9), "FLOP"),
        "gmacs_per_image": Reading(per_image, "GMAC", extra={"steps": steps, "network_passes": passes,
                                                             "convention": "text encoders and decoder once, "
                                                                           "denoisers x steps x passes"}),
    }


def _train_and_score(case: dict[str, Any], pipe: Any, spec: Any) -> dict[str, Reading]:
    from bench import datasets
    from bench.pipeline_sampling import sample_pipeline
    from bench.pipeline_training import train_pipeline, training_data
    from bench.quality_case import score
    from bench.training import TrainConfig
    from metrics.embedded import tokenize

    dataset = "shapes" if spec.cond == "text" else case.get("dataset", "digits")
    data, captions = training_data(spec, dataset, case["seed"])
    out: dict[str, Reading] = {}
    cfg = TrainConfig(steps=case["train_steps"], batch_size=case["train_batch"], lr=case["lr"], seed=case["seed"],
                      checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        results = train_pipeline(pipe, data, cfg, tmp, case["device"], case.get("autoencoder_steps", 200))
    for part, r in results.items():
        k = max(1, min(10, len(r.losses) // 5))
        out[f"train_loss_first[{part}]"] = Reading(sum(r.losses[:k]) / k, "1", samples=r.losses)
        out[f"train_loss_last[{part}]"] = Reading(sum(r.losses[-k:]) / k, "1")
    out["train_steps"] = Reading(cfg.steps, "steps", extra={"per": "part", "parts": list(results)})
    out["train_seconds"] = Reading(sum(r.seconds for r in results.values()), "s")
    flops = [r.train_flops for p, r in results.items() if p != "autoencoder"]
    out["train_flops"] = Reading(sum(f for f in flops if f) if all(flops) else None, "FLOP",
                                 extra={"convention": "3 x forward FLOPs x images seen, summed over the "
                                                      "denoising parts (the autoencoder's training apart)"})
    if "quality" not in case["measure"]:
        return out
    n = case["samples"]
    tokens = labels = held = None
    if spec.cond == "text":
        held = datasets.shapes(n, spec.output_shape[1], seed=case["seed"] + 777).captions or []
        tokens = tokenize(held)
    elif spec.cond == "class":
        labels = torch.arange(n) % spec.num_classes
    t0 = time.perf_counter()
    samples = torch.cat(list(sample_pipeline(pipe, n, tokens, labels, case["scheduler"], case["sample_steps"],
                                             case["guidance"], case["seed"], 128, case["device"])))
    out["sample_ms_per_image"] = Reading((time.perf_counter() - t0) * 1e3 / n, "ms",
                                         extra={"steps": case["sample_steps"], "scheduler": case["scheduler"]})
    out.update(score(samples, data.images, dataset, held))
    return out


def _tokens(spec: Any, batch: int) -> torch.Tensor:
    """Caption ids of the full length the text encoders take (SD: 77 tokens), as real prompts are padded to."""
    vocab = min(int(e.config.get("vocab_size") or e.config.get("vocab") or 2) for e in spec.text_encoder_specs)
    return torch.randint(1, vocab, (batch, spec.text_length), generator=torch.Generator().manual_seed(0))


def _speed(case: dict[str, Any], pipe: Any, spec: Any, flops_per_image: float | None) -> dict[str, Reading]:
    """End-to-end sampling of ``batch_size`` images, timed ``repeats`` times after ``warmup``, with the
    pipeline's guidance and without (guidance 1): the unguided run skips the unconditional pass."""
    from bench import precision
    from bench.pipeline_sampling import Timings, sample_pipeline
    from metrics import energy, memory
    from metrics.timing import time_calls

    device, batch = case["device"], case["batch_size"]
    steps = case.get("sample_steps", spec.steps)
    guidance = case.get("guidance", spec.guidance)
    tokens = _tokens(spec, batch) if spec.cond == "text" else None
    labels = torch.arange(batch) % spec.num_classes if spec.cond == "class" else None
    out: dict[str, Reading] = {}

    def once(g: float, timings: Timings | None = None) -> None:
        with precision.precision(case["precision"], device, case["attention"]):
            for _ in sample_pipeline(pipe, batch, tokens, labels, case.get("scheduler", "ddim"), steps, g,
                                     case["seed"], batch, device, timings=timings):
                pass

    memory.reset_allocator_peak(device)
    for tag, g in (("", guidance), ("_unguided", 1.0)):
        breakdown, calls = Timings(device), [0]

        def timed(g: float = g, breakdown: Timings = breakdown, calls: list[int] = calls) -> None:
            calls[0] += 1  # the first call and the warmup calls stay out of the per-component breakdown
            once(g, breakdown if calls[0] > 1 + case["warmup"] else None)

        t = time_calls(timed, case["warmup"], case["repeats"], device, case.get("min_time_s", 0.0))
        if not tag:
            guided = t  # MFU counts the guided sample's FLOPs, so it divides by the guided latency
        extra = {"steps": steps, "guidance": g, "scheduler": case.get("scheduler", "ddim")}
        out[f"latency_ms{tag}"] = Reading(t.median_ms, "ms", samples=t.samples_ms, extra={**extra, **t.summary()})
        out[f"latency_per_image_ms{tag}"] = Reading(t.median_ms / batch, "ms", extra=extra)
        out[f"throughput_img_s{tag}"] = Reading(batch / (t.median_ms / 1e3), "images/s", extra=extra)
        if not tag:
            out["latency_p10_ms"] = Reading(t.p10_ms, "ms")
            out["latency_p90_ms"] = Reading(t.p90_ms, "ms")
            out["first_call_ms"] = Reading(t.first_call_ms, "ms", extra={"includes": "init"})
            for comp, secs in breakdown.seconds.items():
                out[f"component_ms_per_image[{comp}]"] = Reading(secs * 1e3 / (t.n * batch), "ms", extra=extra)
    if "energy" in case["measure"]:
        with energy.EnergyMeter(device) as meter:
            once(guidance)
        out.update(meter.readings(images=batch))
    if "memory" in case["measure"]:
        out.update(memory.allocator_peaks(device))
        out["cpu_peak_rss_bytes"] = memory.peak_rss_bytes()
    if not device.startswith("cuda"):
        out["mfu"] = Reading.unavailable("1", "MFU needs a GPU peak; this ran on CPU")
    elif flops_per_image is None:
        out["mfu"] = Reading.unavailable("1", "MFU needs the FLOPs per image: add counts to the case's measure")
    else:
        from bench.provenance import device_name
        from metrics import mfu

        out["mfu"] = mfu.mfu(flops_per_image * batch, 1e3 / guided.median_ms, device_name(device), case["precision"])
    return out


def pipeline_readings(case: dict[str, Any]) -> dict[str, Reading]:
    from models.pipeline import Pipeline

    spec = pipeline_spec(case["model"])
    readings: dict[str, Reading] = {}
    if "counts" in case["measure"]:
        readings.update(_counts(spec, case))
    torch.manual_seed(case["seed"])
    pipe = Pipeline(spec).to(case["device"])
    if "train" in case["measure"]:
        readings.update(_train_and_score(case, pipe, spec))
    if {"speed", "memory", "energy"} & set(case["measure"]):
        per_image = readings.get("gmacs_per_image")
        flops = float(per_image.value) * 2e9 if per_image is not None and per_image.value is not None else None
        t0 = time.perf_counter()
        readings.update(_speed(case, pipe.eval(), spec, flops))
        readings["case_wall_s"] = Reading(time.perf_counter() - t0, "s")
    return readings
