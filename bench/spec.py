"""The case spec: everything one case is, as a frozen, typed value.

A suite expands into ``CaseSpec`` values; the runner sends ``spec.to_json()`` to the case's
process, which rebuilds it with ``CaseSpec.from_json``; records store the same JSON as their
``config``; the case id hashes it. Each default lives in one place: ``suites.Settings`` (what a
suite may set) — a spec has none of its own.

The JSON layout is the one records have always carried (flat settings; the training and sampler
settings present only when the case uses them), so case ids of unchanged configs are unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Union

from diffbench.core.errors import ConfigError


@dataclass(frozen=True)
class BackboneRef:
    """A backbone: a preset (with the paper's reference numbers) or a family sized to a target."""

    label: str
    family: str
    config: dict[str, Any] = field(hash=False)  # the family's config, as JSON
    preset: str | None = None
    reference: dict[str, Any] | None = field(default=None, hash=False)  # presets: the paper's numbers
    source: str | None = None  # presets: where the numbers come from
    target: dict[str, float] | None = field(default=None, hash=False)  # sized: {"params": 1.4e6} or {"gmacs": ..}
    input: tuple[int, int, int] | None = None  # sized: the input shape it was sized for
    checkpoint: dict[str, str] | None = field(default=None, hash=False)  # {path, sha256}: weights to load

    kind = "backbone"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "family": self.family, "preset": self.preset,
                               "config": self.config}
        if self.preset is not None:
            out.update(reference=self.reference or {}, source=self.source)
        else:
            out.update(target=self.target, input=list(self.input) if self.input else None)
        if self.checkpoint:  # only then: the ids of cases without one stay what they were
            out["checkpoint"] = dict(self.checkpoint)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackboneRef:
        return cls(d["label"], d["family"], d["config"], d.get("preset"), d.get("reference"), d.get("source"),
                   d.get("target"), tuple(d["input"]) if d.get("input") else None,  # type: ignore[arg-type]
                   d.get("checkpoint"))


@dataclass(frozen=True)
class PipelineRef:
    """A pipeline preset at a scale, its denoisers reshaped to a params budget when one is given."""

    label: str
    pipeline: str
    scale: str
    budget: float | None
    tolerance: float
    config: dict[str, Any] = field(hash=False)  # {"spec_sha256": ..., "stages": [...]}: what was built
    target: dict[str, float] | None = field(default=None, hash=False)
    input: tuple[int, int, int] | None = None  # the output image shape

    kind = "pipeline"

    @property
    def family(self) -> str:
        return f"pipeline:{self.pipeline}"

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "family": self.family, "preset": None, "pipeline": self.pipeline,
                "scale": self.scale, "budget": self.budget, "tolerance": self.tolerance, "target": self.target,
                "input": list(self.input) if self.input else None, "config": self.config}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PipelineRef:
        return cls(d["label"], d["pipeline"], d["scale"], d.get("budget"), d["tolerance"], d["config"],
                   d.get("target"), tuple(d["input"]) if d.get("input") else None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DiffusersRef:
    """A diffusers pipeline directory (``model_index.json``), loaded from local files only: what it is (its class,
    components and conditioning, read without loading weights) and the sha256 of its files, its identity."""

    label: str
    path: str
    sha256: str
    config: dict[str, Any] = field(hash=False)  # {"class_name", "components": {name: class}, "cond", "classes"}
    input: tuple[int, int, int] | None = None  # the output image shape

    kind = "diffusers"
    preset = None

    @property
    def family(self) -> str:
        return f"diffusers:{self.config.get('class_name', '?')}"

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "family": self.family, "preset": None, "diffusers": self.path,
                "sha256": self.sha256, "config": self.config, "input": list(self.input) if self.input else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DiffusersRef:
        return cls(d["label"], d["diffusers"], d["sha256"], d["config"],
                   tuple(d["input"]) if d.get("input") else None)  # type: ignore[arg-type]


ModelRef = Union[BackboneRef, PipelineRef, DiffusersRef]  # noqa: UP007 - a runtime alias, Python 3.10 too


@dataclass(frozen=True)
class Training:
    """How a case trains and scores (measure ``train`` / ``quality``), on an embedded dataset."""

    dataset: str
    train_steps: int
    train_batch: int
    lr: float
    samples: int  # generated images scored by the embedded detector
    autoencoder_steps: int  # pipelines with an autoencoder: its steps, before the stages
    ema: str = "power"  # the scored weights' average (diffusion/ema.py)
    ema_std: float = 0.10
    ema_decay: float = 0.9999
    lr_warmup: int = 0
    eval_every: int = 0  # > 0: quality also every that many steps during training (DiT's Figure 9 curves)
    prediction: str = "epsilon"  # backbones: epsilon or v_prediction (trained, then sampled, so)


@dataclass(frozen=True)
class Sampler:
    """How samples are drawn (scored samples, and a pipeline's end-to-end timing)."""

    sample_steps: int
    scheduler: str
    guidance: float


@dataclass(frozen=True)
class CaseSpec:
    model: ModelRef
    batch_size: int
    precision: str
    device: str
    compile: bool
    channels_last: bool
    attention: str
    warmup: int
    repeats: int
    min_time_s: float
    seed: int
    measure: tuple[str, ...]
    oom_retry: bool
    nvml_interval_s: float
    cond: str
    classes: int
    timeout_s: float  # not part of the identity: a longer timeout measures the same thing
    training: Training | None = None
    sampler: Sampler | None = None
    oom_retry_from: int | None = None  # set by the runner when it halved the batch after an OOM
    repetitions: int = 1  # > 1: the case runs that many times, each in a fresh process (bench/repetitions.py)
    devices_per_case: int = 1  # devices the runner reserves for the case (all visible to its process)
    accept: tuple[tuple[str, float, float], ...] = ()  # accuracy bands (bench/accuracy.py); not part of the identity
    protocol: dict[str, Any] | None = field(default=None, hash=False)  # scoring a pretrained system (bench/protocols)

    FLAT = ("batch_size", "precision", "device", "compile", "channels_last", "attention", "warmup", "repeats",
            "min_time_s", "seed", "oom_retry", "nvml_interval_s", "cond", "classes", "timeout_s")

    @property
    def is_pipeline(self) -> bool:
        return isinstance(self.model, PipelineRef)

    def measures(self, *what: str) -> bool:
        """True when the case measures any of ``what``."""
        return bool(set(what) & set(self.measure))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model.to_json(), **{k: getattr(self, k) for k in self.FLAT},
                               "measure": list(self.measure)}
        for part in (self.training, self.sampler):
            if part is not None:
                out.update(dataclasses.asdict(part))
        if out.get("prediction") == "epsilon":  # the default: ids of cases from before the setting stay the same
            del out["prediction"]
        if self.oom_retry_from is not None:
            out["oom_retry_from"] = self.oom_retry_from
        if self.repetitions != 1:  # only then: the ids of cases without repetitions stay what they were
            out["repetitions"] = self.repetitions
        if self.devices_per_case != 1:
            out["devices_per_case"] = self.devices_per_case
        if self.accept:
            out["accept"] = {name: [low, high] for name, low, high in self.accept}
        if self.protocol is not None:
            out["protocol"] = dict(self.protocol)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseSpec:
        try:
            m = d["model"]
            model: ModelRef = PipelineRef.from_json(m) if "pipeline" in m else \
                DiffusersRef.from_json(m) if "diffusers" in m else BackboneRef.from_json(m)
            # fields added later have defaults: a spec written before them still reads (to its old meaning)
            training = Training(**{f.name: d[f.name] for f in dataclasses.fields(Training) if f.name in d}) \
                if "train_steps" in d else None
            sampler = Sampler(**{f.name: d[f.name] for f in dataclasses.fields(Sampler) if f.name in d}) \
                if "sample_steps" in d else None
            return cls(model=model, **{k: d[k] for k in cls.FLAT}, measure=tuple(d["measure"]), training=training,
                       sampler=sampler, oom_retry_from=d.get("oom_retry_from"), repetitions=d.get("repetitions", 1),
                       devices_per_case=d.get("devices_per_case", 1),
                       accept=tuple(sorted((str(k), float(v[0]), float(v[1])) for k, v in d.get("accept", {}).items())),
                       protocol=d.get("protocol"))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not a case config written by this diffbench: {type(e).__name__} {e}") from None

    @functools.cached_property
    def case_id(self) -> str:
        """sha256 of the JSON (timeout, accuracy bands and the runner's OOM note excluded), 16 hex digits."""
        identity = {k: v for k, v in self.to_json().items() if k not in ("timeout_s", "oom_retry_from", "accept")}
        weights = identity["model"].get("checkpoint")
        if weights:  # the weights' content is the identity, not where the file lies
            identity["model"] = {**identity["model"], "checkpoint": {k: v for k, v in weights.items()
                                                                     if k.endswith("sha256")}}
        if "diffusers" in identity["model"]:  # a pipeline directory: its files' content, not its path
            identity["model"] = {k: v for k, v in identity["model"].items() if k != "diffusers"}
        if self.protocol is not None:  # the protocol's files by content (bench/protocols.py)
            from diffbench.bench.protocols import Protocol

            identity["protocol"] = Protocol.from_json(self.protocol).identity()
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_batch(self, batch_size: int) -> CaseSpec:
        """The same case at another batch size (the runner's OOM retry); the id stays the original's."""
        return dataclasses.replace(self, batch_size=batch_size,
                                   oom_retry_from=self.oom_retry_from or self.batch_size)
