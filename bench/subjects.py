"""The subject contract: a thing to benchmark, whatever it is inside.

A case measures a *subject* through five verbs — count it, train it to a budget, sample from it,
and give the calls to time (``evaluations``) with what was learnt along them (``breakdown``).
Two adapters implement them: :class:`BackboneSubject` (one network evaluation per call) and
:class:`PipelineSubject` (one end-to-end sample per call, with and without guidance). Everything
else — timing, memory, energy, MFU, training readings, scoring — is written once, over the
contract, in ``bench.measure`` and ``bench.evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from diffbench.bench.spec import CaseSpec
from diffbench.diffusion import datasets
from diffbench.diffusion.training import TrainConfig
from diffbench.metrics.captions import tokenize
from diffbench.metrics.reading import Reading


@dataclass
class Evaluation:
    """One timed call: ``run()`` does the work for ``images`` images; ``tag`` suffixes its metric names."""

    run: Callable[[], Any]
    images: int
    tag: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # recorded with its latency readings


@dataclass
class Held:
    """Held-out conditions to sample and score with: labels or caption ids, and the captions themselves."""

    conds: torch.Tensor | None
    captions: list[str] | None = None


class Subject(Protocol):
    spec: CaseSpec
    dataset: str  # what it trains on and is scored against (digits, shapes, a path)

    @property
    def detector(self) -> str: ...  # what scores its samples against that dataset
    cond: str  # class, text or none: what its samples are conditioned on
    num_classes: int

    def counts(self) -> dict[str, Reading]: ...
    def flops_per_image(self, counts: dict[str, Reading]) -> float | None: ...
    def train(self, out_dir: str, stop_after: int | None = None) -> dict[str, Any]: ...  # part -> TrainResult
    def reference_images(self) -> torch.Tensor: ...
    def sample(self, n: int, held: Held) -> torch.Tensor: ...
    def evaluations(self) -> list[Evaluation]: ...  # the main (guided) call first
    def breakdown(self, calls: int) -> dict[str, Reading]: ...


def held_out(cond: str, n: int, resolution: int, seed: int, num_classes: int = 10, source: Any = None) -> Held:
    """Conditions to sample: classes in turn; captions of fresh shapes (never trained on), or of a captioned
    dataset on disk, its first n in turn (it has no held-out captions)."""
    if cond == "text" and source is not None and getattr(source, "name", "shapes") != "shapes":
        b = source.reference(n)
        reps = -(-n // len(b.captions))
        captions = (b.captions * reps)[:n]
        return Held(tokenize(captions), captions)
    if cond == "text":
        captions = datasets.shapes(n, resolution, seed=seed + 777).captions or []
        return Held(tokenize(captions), captions)
    if cond == "class":
        return Held(torch.arange(n) % num_classes)
    return Held(None)


def train_config(spec: CaseSpec) -> TrainConfig:
    assert spec.training is not None, "a case that trains carries training settings"
    return spec.training.train_config(spec.seed, spec.placement.checkpoint_every)
