"""The metrics diffbench can record: name, unit and meaning (one registry, one place)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.registry import Registry


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    description: str
    better: str = ""  # "lower", "higher" or "" (not a quality)


METRICS: Registry[MetricSpec] = Registry("metric", "quantities that records carry")

for _spec in [
    MetricSpec("params", "count", "every nn.Parameter of the denoiser, frozen ones included"),
    MetricSpec("params_trainable", "count", "parameters with requires_grad"),
    MetricSpec("gmacs", "GMAC", "multiply-accumulates of one network evaluation at batch 1 (FlopCounterMode / 2)"),
    MetricSpec("flops", "FLOP", "FLOPs of one network evaluation at batch 1 (2 per MAC)"),
]:
    METRICS.add(_spec.name, _spec)
