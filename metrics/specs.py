"""Every metric a record can carry, in one registry: name, unit, kind, direction and meaning.

Cases write through it (:func:`check` refuses a name or unit it does not hold), reports take their
columns from it, and ``diffbench list metrics`` shows it. ``kind`` says how a value may be
compared between runs: ``exact`` (counts: any change means the model changed), ``timing`` (noisy:
compare raw samples), ``memory`` (near-deterministic allocator peaks), ``energy``, ``efficiency``
(MFU), ``quality`` (moves with seeds unless the run is deterministic), ``training`` (the loss
curve), ``status`` (the row a failed case leaves). ``better`` is ``lower``, ``higher`` or ``""``
(a setting or a count, neither better nor worse).

A metric with a ``qualifier`` is written as ``name[value]``: ``fid[digits]`` (the detector),
``train_loss_last[stage1]`` (the trained part), ``component_ms_per_image[decoder]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from diffbench.core.registry import Registry

KINDS = ("exact", "timing", "memory", "energy", "efficiency", "quality", "training", "status")
MIB = 1 / 2**20


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    kind: str
    better: str  # "lower", "higher" or "" (neither)
    description: str
    column: str = ""  # header in the report's comparison table ("" = not a column there); carries the unit
    scale: float = 1.0  # value x scale is what the column shows (bytes -> MiB)
    qualifier: str = ""  # "detector", "part" or "component": written as name[...]
    pipeline_column: str = ""  # header in the report's pipelines table
    derived_from: str = ""  # computed from another metric's samples (throughput from latency): judged by that one

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.better not in ("lower", "higher", ""):
            raise ValueError(f"metric {self.name}: kind {self.kind!r} / better {self.better!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


METRICS: Registry[MetricSpec] = Registry("metric", "quantities that records carry")


def _add(name: str, unit: str, kind: str, better: str, description: str, **kw: Any) -> None:
    METRICS.add(name, MetricSpec(name, unit, kind, better, description, **kw))


_E, _T, _M = "exact", "timing", "memory"
# exact counts, on the meta device
_add("params", "count", _E, "", "every nn.Parameter of the denoiser(s), frozen ones included; pipelines: every "
     "stage, expert and prior", column="params (M)", scale=1e-6, pipeline_column="denoiser params (M)")
_add("params_trainable", "count", _E, "", "parameters with requires_grad")
_add("params_all", "count", _E, "", "pipelines: every component (text encoders and autoencoder too)",
     pipeline_column="params, all (M)", scale=1e-6)
_add("gmacs", "GMAC", _E, "lower", "multiply-accumulates of one network evaluation at batch 1 (FlopCounterMode / "
     "2); pipelines: one step of every stage (the largest expert) and the prior", column="GMACs",
     pipeline_column="GMACs/step")
_add("flops", "FLOP", _E, "lower", "FLOPs of one network evaluation at batch 1 (2 per MAC)")
_add("gmacs_per_image", "GMAC", _E, "lower", "pipelines: a whole sample: denoisers x steps x guidance passes, text "
     "encoders and decoder once", pipeline_column="GMACs/image")
# timing (raw samples in the record)
_add("throughput_img_s", "images/s", _T, "higher", "batch / median latency", column="images/s",
     derived_from="latency_ms")
_add("throughput_img_s_unguided", "images/s", _T, "higher", "pipelines: batch / median latency without guidance",
     derived_from="latency_ms_unguided")
_add("latency_ms", "ms", _T, "lower", "median of the timed calls (one evaluation, or one end-to-end sample for "
     "pipelines), first call apart; raw samples kept", column="latency p50 (ms)")
_add("latency_ms_unguided", "ms", _T, "lower", "pipelines: median latency at guidance 1 (no unconditional pass)")
_add("latency_p10_ms", "ms", _T, "lower", "10th percentile of the timed calls", derived_from="latency_ms")
_add("latency_p90_ms", "ms", _T, "lower", "90th percentile of the timed calls", column="latency p90 (ms)",
     derived_from="latency_ms")
_add("latency_per_image_ms", "ms", _T, "lower", "median latency / batch", pipeline_column="ms/image (guided)",
     derived_from="latency_ms")
_add("latency_per_image_ms_unguided", "ms", _T, "lower", "pipelines: median latency without guidance / batch",
     pipeline_column="ms/image (unguided)", derived_from="latency_ms_unguided")
_add("first_call_ms", "ms", _T, "lower", "the first call (includes initialisation, or compilation with compile)")
_add("compile_ms", "ms", _T, "lower", "estimate: first call minus the steady-state median (compile only)")
_add("component_ms_per_image", "ms", _T, "lower", "pipelines: time per image in one component of guided "
     "sampling (text encoder, prior, each stage, decoder)", qualifier="component")
_add("case_wall_s", "s", _T, "lower", "wall time of the case's speed, memory and energy measurements")
_add("sample_ms_per_image", "ms", _T, "lower", "sampling the images that are scored, per image")
_add("train_seconds", "s", _T, "lower", "wall time of training (all parts)", column="train time (s)")
_add("phase_seconds", "s", _T, "lower", "wall time of one phase of the case, in its process: train, sample, score, "
     "counts, measure (speed, memory, energy), total; compare with the device's calibration in device.json",
     qualifier="phase")
# memory
_add("peak_mem_allocated_bytes", "bytes", _M, "lower", "torch CUDA allocator peak of allocated memory (exact)",
     column="peak alloc (MiB)", scale=MIB)
_add("peak_mem_reserved_bytes", "bytes", _M, "lower", "torch CUDA allocator peak of reserved memory")
_add("nvml_peak_used_bytes", "bytes", _M, "lower", "NVML device memory in use, peak of a background sampler",
     column="NVML peak (MiB)", scale=MIB)
_add("nvml_process_peak_bytes", "bytes", _M, "lower", "NVML memory of this process, peak of a background sampler")
_add("cpu_peak_rss_bytes", "bytes", _M, "lower", "peak resident set size of the case's whole process (Python, "
     "torch and its libraries, data, the model): not the model's own memory", column="process peak RSS (MiB)",
     scale=MIB)
_add("model_bytes", "bytes", _E, "lower", "the network's own parameters and buffers as built (fp32), counted exactly",
     column="weights (MiB)", scale=MIB)
# energy and efficiency
_add("energy_j_per_image", "J", "energy", "lower", "NVML total-energy counter over a window of at least 1 s, "
     "per image", column="J/image")
_add("mean_power_w", "W", "energy", "", "energy over the window's duration")
_add("mfu", "1", "efficiency", "higher", "counted FLOPs x calls/s over the device's datasheet peak for the "
     "precision", column="MFU (%)", scale=100.0)
# quality
_add("fid", "1", "quality", "lower", "Frechet distance of detector features, generated vs reference",
     qualifier="detector")
_add("kid", "1", "quality", "lower", "kernel inception distance (unbiased MMD^2, cubic kernel) of detector features, "
     "generated vs reference; its 95% interval in extra.ci95", qualifier="detector")
_add("fid_real", "1", "quality", "", "FID of as many real images as were generated, against the reference: the "
     "floor of FID at that sample count (its small-sample bias)", qualifier="detector")
_add("clip_score", "1", "quality", "higher", "100 x max(cos, 0) of image and own caption; a protocol's is qualified "
     "by the protocol and the CLIP (clip_score[coco-30k:ViT-B-32])", column="CLIP score", qualifier="detector")
_add("clip_score_shuffled", "1", "quality", "", "CLIP score against captions shifted by 7 (a chance baseline)",
     column="CLIP score, shuffled captions", qualifier="detector")
# training
_add("train_steps", "steps", _E, "", "optimiser steps (per part for pipelines)", column="train steps")
_add("train_flops", "FLOP", _E, "", "3 x forward FLOPs x images seen (denoising parts)", column="train FLOPs")
_add("train_loss_first", "1", "training", "lower", "mean loss of the first steps (all steps as samples)",
     qualifier="part")
_add("train_loss_last", "1", "training", "lower", "mean loss of the last steps", column="final train loss",
     qualifier="part")
_add("train_images_per_s", "img/s", _T, "higher", "training throughput over the steady-state steps (the first, "
     "with any compilation, apart), the whole world's images; extra.world_size ranks", column="train img/s")
_add("train_step_ms", "ms", _T, "lower", "median wall time of a training step (steady state; on a GPU, after a "
     "synchronisation); extra.p90_ms, extra.first_step_ms (compilation and warm-up), all steps as samples")
_add("train_data_wait", "1", _T, "lower", "fraction of the steady-state step time the loop spent blocked waiting "
     "for its batch (measured on rank 0, not estimated)", column="data wait (%)", scale=100.0)
_add("train_mfu", "1", "efficiency", "higher", "training FLOPs (3 x forward) per second over the world's datasheet "
     "peak, where the device's peak is known")
_add("cond_gain", "1", "training", "higher", "1 - denoising loss with the condition / with the null condition, on "
     "a fixed sample of training images (diffusion/conditioning.py): how much the trained model uses its label or "
     "caption; its 95% interval in extra.ci95", column="condition gain (%)", scale=100.0)
# a failed case
_add("case", "", "status", "", "the one record of a case that did not finish: its status and error")


@dataclass(frozen=True, order=True)
class MetricKey:
    """A record's metric name, typed: the registry's ``base`` and, for metrics that take one, a ``qualifier`` (the
    detector, the trained part, the pipeline component, the phase). Written ``base[qualifier]``; built and read here
    only (:func:`metric_name`, :meth:`parse`), never with string operations elsewhere (tests/test_metric_keys.py)."""

    base: str
    qualifier: str = ""

    @classmethod
    def read(cls, name: str) -> MetricKey | None:
        """The key of a well-formed name (``fid[digits]``, ``params``), None for anything else (``fid[digits] se``,
        a wide frame's interval column)."""
        key = cls.parse(name)
        return key if str(key) == name and "[" not in key.qualifier and "]" not in key.qualifier else None

    @classmethod
    def parse(cls, name: str) -> MetricKey:
        """``fid[digits]`` -> MetricKey("fid", "digits"). A malformed name parses to a key whose ``str`` differs from
        it (``fid[x`` -> ``fid[x]``): :func:`check` refuses those."""
        base, _, rest = name.partition("[")
        return cls(base, rest[:-1] if rest.endswith("]") else rest)

    def __str__(self) -> str:
        return f"{self.base}[{self.qualifier}]" if self.qualifier else self.base

    @property
    def spec(self) -> MetricSpec:
        return METRICS.get(self.base)

    def with_base(self, base: str) -> MetricKey:
        """The metric ``base`` with this qualifier: the floor of ``fid[digits]`` is ``fid_real[digits]``."""
        return MetricKey(base, self.qualifier)

    def header(self) -> str:
        """As a table header: ``fid (digits)``."""
        return f"{self.base} ({self.qualifier})" if self.qualifier else self.base

    def slug(self) -> str:
        """As part of a file name: ``fid_digits``."""
        return f"{self.base}_{self.qualifier}" if self.qualifier else self.base


def metric_name(base: str, qualifier: str = "") -> str:
    """The name a record carries: ``metric_name("fid", "digits")`` is ``fid[digits]``."""
    return str(MetricKey(base, qualifier))


def base_name(metric: str) -> str:
    """``fid[digits]`` -> ``fid``."""
    return MetricKey.parse(metric).base


def spec_of(metric: str) -> MetricSpec:
    return METRICS.get(base_name(metric))


def check(metric: str, unit: str) -> None:
    """Refuse a metric the registry does not hold, a qualifier where none belongs, or a unit other than its own."""
    key = MetricKey.parse(metric)
    spec = key.spec
    if key.qualifier and not spec.qualifier:
        raise ValueError(f"metric {metric!r}: {spec.name} takes no [qualifier]")
    if str(key) != metric:
        raise ValueError(f"metric {metric!r}: not a name nor name[qualifier]")
    if unit != spec.unit:
        raise ValueError(f"metric {metric!r} is in {spec.unit!r}, not {unit!r}")


def qualified(kind: str = "", qualifier: str = "", better: str = "") -> tuple[str, ...]:
    """Names of the metrics of a ``kind`` that take a ``qualifier`` (``"detector"``) and have a direction."""
    return tuple(n for n, m in METRICS.items() if (not kind or m.kind == kind)
                 and (not qualifier or m.qualifier == qualifier) and (not better or m.better == better))


def is_detector_quality(name: str, better: str = "lower") -> bool:
    """True for a quality metric qualified by its detector that is better ``lower`` (``fid[digits]``, ``kid[..]``):
    those the report fits and plots. An interval column (``fid[digits] se``) is not one."""
    key = MetricKey.read(name)
    return key is not None and bool(key.qualifier) and key.base in qualified("quality", "detector", better)


HEADLINE = "fid or kid (of the run's detector), or one qualified name such as fid[digits]"


def is_headline(name: object) -> bool:
    """A name the report can head with (a suite's ``[report] metric``, ``report --metric``): HEADLINE."""
    key = MetricKey.read(name) if isinstance(name, str) else None
    return key is not None and key.base in qualified("quality", "detector", "lower")


def columns(attribute: str = "column") -> list[tuple[str, str, float]]:
    """(metric, header, scale) of every metric with a header in ``attribute``, in registry order."""
    return [(n, getattr(m, attribute), m.scale) for n, m in METRICS.items() if getattr(m, attribute)]
