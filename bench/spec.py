"""The case spec: everything one case is, as a frozen, typed value.

A suite expands into ``CaseSpec`` values; the runner sends ``spec.to_json()`` to the case's
process, which rebuilds it with ``CaseSpec.from_json``; records store the same JSON as their
``config``; the case id hashes it. Each default lives in one place, ``bench/settings.py``: a spec's
training and sampler parts are those settings' dataclasses, and :func:`case_spec` (the one factory,
for suites and ``benchmark_module``) takes every other value from :class:`Settings`.

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

from diffbench.bench.accuracy import bands
from diffbench.bench.protocols import Protocol
from diffbench.bench.settings import DEFAULTS, Placement, SamplingSettings, Settings, TrainingSettings
from diffbench.core.errors import ConfigError

# training settings written only when not at their default (added after records existed)
LATER_TRAINING = ("prediction", "train_flops", "data_resolution", "skip_bad", "flip", "fid_detector")
# what changes how a case runs, not what it measures: not part of its id
NOT_IDENTITY = ("timeout_s", "oom_retry_from", "accept", "data_workers", "micro_batch", "checkpoint_every")


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
    # a family from outside: {module, sha256, search} (models/external.py), imported again in the case's process
    origin: dict[str, str] | None = field(default=None, hash=False)

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
        if self.origin:
            out["origin"] = dict(self.origin)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackboneRef:
        return cls(d["label"], d["family"], d["config"], d.get("preset"), d.get("reference"), d.get("source"),
                   d.get("target"), tuple(d["input"]) if d.get("input") else None,  # type: ignore[arg-type]
                   d.get("checkpoint"), d.get("origin"))


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


@dataclass(frozen=True, kw_only=True)
class CaseSpec:
    """One case: the model, and the values of its settings (one batch size and precision of the suite's lists)."""

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
    training: TrainingSettings | None = None
    sampler: SamplingSettings | None = None
    oom_retry_from: int | None = None  # set by the runner when it halved the batch after an OOM
    # > 1: the case runs that many times, each in a fresh process (bench/repetitions.py)
    repetitions: int = DEFAULTS.measurement.repetitions
    # where it runs (the devices the runner reserves for it, all visible to its process): apart from what it measures
    placement: Placement = DEFAULTS.placement
    # accuracy bands (bench/accuracy.py); not part of the identity
    accept: tuple[tuple[str, float, float], ...] = bands(DEFAULTS.measurement.accept)
    protocol: Protocol | None = field(default=None, hash=False)  # scoring a pretrained system (bench/protocols)
    # a dataset on disk: the sha256 of its file list (names, sizes, mtimes), its identity in place of its path
    dataset_sha256: str | None = None

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
        # settings added after records existed are written only when not at their default, so ids of cases from
        # before them stay the same
        for key in LATER_TRAINING:
            if key in out and out[key] == getattr(DEFAULTS.training, key):
                del out[key]
        if self.oom_retry_from is not None:
            out["oom_retry_from"] = self.oom_retry_from
        # only then: the ids of cases without repetitions (or placement) stay what they were
        if self.repetitions != DEFAULTS.measurement.repetitions:
            out["repetitions"] = self.repetitions
        out.update({k: v for k, v in dataclasses.asdict(self.placement).items()
                    if v != getattr(DEFAULTS.placement, k)})
        if self.accept:
            out["accept"] = {name: [low, high] for name, low, high in self.accept}
        if self.protocol is not None:
            out["protocol"] = self.protocol.to_json()
        if self.dataset_sha256:
            out["dataset_sha256"] = self.dataset_sha256
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseSpec:
        try:
            m = d["model"]
            model: ModelRef = PipelineRef.from_json(m) if "pipeline" in m else \
                DiffusersRef.from_json(m) if "diffusers" in m else BackboneRef.from_json(m)
            # fields added later have defaults: a spec written before them still reads (to its old meaning)
            training = _part(TrainingSettings, d) if "train_steps" in d else None
            sampler = _part(SamplingSettings, d) if "sample_steps" in d else None
            return cls(model=model, **{k: d[k] for k in cls.FLAT}, measure=tuple(d["measure"]), training=training,
                       sampler=sampler, oom_retry_from=d.get("oom_retry_from"),
                       repetitions=d.get("repetitions", DEFAULTS.measurement.repetitions),
                       placement=_part(Placement, d),
                       accept=bands(d.get("accept")),
                       protocol=Protocol.from_json(d["protocol"]) if d.get("protocol") is not None else None,
                       dataset_sha256=d.get("dataset_sha256"))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not a case config written by this diffbench: {type(e).__name__} {e}") from None

    @functools.cached_property
    def case_id(self) -> str:
        """sha256 of the JSON (timeout, accuracy bands and the runner's OOM note excluded), 16 hex digits."""
        identity = {k: v for k, v in self.to_json().items() if k not in NOT_IDENTITY}
        identity["device"] = self.device.split(":")[0]  # the device type: which GPU of a machine is placement
        if identity.get("dataset_sha256"):  # a dataset on disk: its files' content, not where they lie
            identity.pop("dataset", None)
        weights = identity["model"].get("checkpoint")
        if weights:  # the weights' content is the identity, not where the file lies
            identity["model"] = {**identity["model"], "checkpoint": {k: v for k, v in weights.items()
                                                                     if k.endswith("sha256")}}
        if identity["model"].get("origin"):  # a family from outside: its source's content, not the folder searched
            identity["model"] = {**identity["model"], "origin": {k: v for k, v in identity["model"]["origin"].items()
                                                                 if k != "search"}}
        if "diffusers" in identity["model"]:  # a pipeline directory: its files' content, not its path
            identity["model"] = {k: v for k, v in identity["model"].items() if k != "diffusers"}
        if self.protocol is not None:  # the protocol's files by content (bench/protocols.py)
            identity["protocol"] = self.protocol.identity()
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_batch(self, batch_size: int) -> CaseSpec:
        """The same case at another batch size (the runner's OOM retry); the id stays the original's."""
        return dataclasses.replace(self, batch_size=batch_size,
                                   oom_retry_from=self.oom_retry_from or self.batch_size)


def _part(cls: type, d: dict[str, Any]) -> Any:
    """A spec's training or sampler part from its flat JSON keys (fields added later take their defaults: a spec
    written before them still reads, to its old meaning)."""
    return cls(**{f.name: tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name]
                  for f in dataclasses.fields(cls) if f.name in d})


def case_spec(model: ModelRef, settings: Settings, *, batch_size: int, precision: str, device: str, cond: str,
              classes: int, protocol: Protocol | None = None, pretrained: bool = False,
              oom_retry: bool | None = None) -> CaseSpec:
    """The one way a case spec is made (suites and ``benchmark_module``): every value from ``settings``. The training
    settings only for cases that train (not pretrained systems), the sampler's for the cases that sample (those that
    train and score, and every pipeline, timed end to end), the protocol only for cases that score: each changes an
    id only where it changes what is measured."""
    m = settings.measurement
    trains = bool({"train", "quality"} & set(m.measure))
    samples = trains or isinstance(model, (PipelineRef, DiffusersRef))
    return CaseSpec(model=model, batch_size=batch_size, precision=precision, device=device, compile=m.compile,
                    channels_last=m.channels_last, attention=m.attention, warmup=m.warmup, repeats=m.repeats,
                    min_time_s=m.min_time_s, seed=m.seed, measure=tuple(m.measure),
                    oom_retry=m.oom_retry if oom_retry is None else oom_retry, nvml_interval_s=m.nvml_interval_s,
                    cond=cond, classes=classes, timeout_s=m.timeout_s,
                    training=settings.training if trains and not pretrained else None,
                    sampler=settings.sampling if samples else None, repetitions=m.repetitions,
                    placement=settings.placement, accept=bands(m.accept),
                    protocol=protocol if protocol is not None and "quality" in m.measure else None)
