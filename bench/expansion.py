"""Expansion: a suite's sweeps resolved into cases — each model sized (once, here, in the parent), its
checkpoint checked, and one case per precision and batch size, built by the one case factory."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.bench.settings import Settings
from diffbench.bench.spec import BackboneRef, CaseSpec, DiffusersRef, ModelRef, PipelineRef, case_spec
from diffbench.bench.suites import Suite, Sweep
from diffbench.core.errors import BadInputError, ConfigError, FamilyError
from diffbench.core.files import content_sha256
from diffbench.core.log import logger
from diffbench.diffusion.resolve import EMBEDDED, dataset_sha256
from diffbench.metrics.captions import MAX_WORDS
from diffbench.models import external
from diffbench.models.api import check_fits, config_dict, config_from_dict, count, file_sha256, resolve
from diffbench.models.denoiser import TEXT_DIM
from diffbench.models.families import FAMILIES, family_of
from diffbench.models.pipelines import fingerprint, pipeline_spec
from diffbench.models.presets import PRESETS
from diffbench.models.pretrained import inspect_dir
from diffbench.models.quantities import parse_input_shape, parse_target
from diffbench.models.sizing import Conditioning, match_many


@dataclass(frozen=True)
class Case:
    name: str  # human label, also what --only matches
    spec: CaseSpec
    refused: str = ""  # why it cannot run (a family from outside at fault): the runner writes this as its error row

    @property
    def case_id(self) -> str:
        """The hash of the spec (timeout excluded): the identity --resume uses."""
        return self.spec.case_id

    @property
    def config(self) -> dict[str, Any]:
        """The spec as JSON, as records carry it."""
        return self.spec.to_json()


def _weights(sweep: Sweep, cfg: Any) -> dict[str, str] | None:
    """{path, sha256} of a checkpoint that fits the config (keys and shapes checked now, before any case runs), and
    of the autoencoder that decodes its latents."""
    path = sweep.checkpoint
    if path is None:
        return None
    check_fits(cfg, path)
    out = {"path": path, "sha256": file_sha256(path)}
    channels = family_of(cfg).input_shape(cfg)[0]
    scored = sweep.protocol is not None and "quality" in sweep.settings.measurement.measure
    if scored and channels != 3 and not sweep.autoencoder:
        raise ConfigError(f"{path}: the backbone makes {channels}-channel latents; give autoencoder = \"DIR\" (a local "
                          "diffusers AutoencoderKL, e.g. sd-vae-ft-ema for DiT) to decode them for scoring")
    if sweep.autoencoder:
        out.update(autoencoder=sweep.autoencoder, autoencoder_sha256=content_sha256(Path(sweep.autoencoder)))
    return out


def _models(sweep: Sweep, file: str, refusals: dict[str, str]) -> list[ModelRef]:
    """Resolve a sweep's models to concrete configs (sizing happens here, once, in the parent). A family from outside
    that cannot be imported, breaks the contract or misses a size gets its models all the same, with the fault in
    ``refusals`` (by label): they become error rows, and the rest of the suite runs."""
    out: list[ModelRef] = []
    for name in sweep.presets:
        cfg, preset = resolve(name), PRESETS.get(name)
        out.append(BackboneRef(name, family_of(cfg).name, config_dict(cfg), name, dict(preset.reference),
                               preset.source, checkpoint=_weights(sweep, cfg)))
    out.extend(_pipeline_models(sweep, file))
    out.extend(_directory_models(sweep))
    by = "params" if sweep.params else "gmacs"
    tag = "" if sweep.cond == "class" else f"/{sweep.cond}"
    names, faults = _families(sweep, file)
    wanted = [(fam, parse_input_shape(shape_text), t, parse_target(t, by, f"{file}: {by} target"))
              for fam in sweep.families for shape_text in sweep.input_shapes for t in sweep.params or sweep.gmacs]
    sized = [w for w in wanted if w[0] not in faults]
    found = match_many([(names[fam], {"input_shape": shape, "cond": _conditioning(sweep), "patch": sweep.patch or None,
                                      "tolerance": sweep.tolerance, by: value}) for fam, shape, _, value in sized],
                       series=sweep.scaling == "width", keep_errors=True)
    results = dict(zip([(f, s, t) for f, s, t, _ in sized], found, strict=True))
    for fam, shape, t, value in wanted:
        name, origin = names.get(fam, fam), external.origin(names.get(fam, ""))
        label = f"{name}@{t}{tag}"
        r = results.get((fam, shape, t), faults.get(fam))
        if isinstance(r, BaseException):
            if origin is None and fam not in faults:  # a built-in family: the suite's own mistake, before any case
                raise r
            refusals[label] = str(r)
            out.append(BackboneRef(label, name, {}, target={by: value}, input=shape,
                                   origin=origin or {"module": fam}))
            continue
        assert r is not None
        out.append(BackboneRef(label, name, config_dict(r.config), target={by: value}, input=shape,
                               checkpoint=_weights(sweep, r.config), origin=origin))
    return out


def _families(sweep: Sweep, file: str) -> tuple[dict[str, str], dict[str, FamilyError]]:
    """Each of the sweep's families by its registered name (a module path or entry point imported here, with the
    suite's folder searched), and the faults of those from outside that could not be imported or checked."""
    names: dict[str, str] = {}
    faults: dict[str, FamilyError] = {}
    folder = str(Path(file).parent) if Path(file).is_file() else None
    for fam in sweep.families:
        try:
            found = FAMILIES.get(fam) if fam in FAMILIES else external.find(fam, folder)
            names[fam] = (found or FAMILIES.get(fam)).name
        except FamilyError as e:
            faults[fam] = e
    return names, faults


def _directory_models(sweep: Sweep) -> list[DiffusersRef]:
    """Diffusers pipeline directories: read from their JSON files, identified by the sha256 of their files."""
    out = []
    for path in sweep.directories:
        info = inspect_dir(path)
        p = sweep.protocol
        if p is not None and "quality" in sweep.settings.measurement.measure:
            if p.kind == "captions" and info.cond != "text":
                raise ConfigError(f"{path}: a {info.class_name} takes no captions; protocol {p.name} is captions")
            if p.kind == "class" and info.cond != "class":
                raise ConfigError(f"{path}: a {info.class_name} takes no class labels; protocol {p.name} is class")
            if p.kind == "unconditional" and info.cond != "none":
                raise ConfigError(f"{path}: a {info.class_name} is conditioned on {info.cond}; protocol {p.name} is "
                                  "unconditional (use a class or captions protocol)")
            if p.kind == "class" and info.classes and p.classes > info.classes:
                raise ConfigError(f"{path}: the pipeline knows {info.classes} classes; protocol {p.name} asks for "
                                  f"{p.classes}")
        out.append(DiffusersRef(Path(path).name, path, content_sha256(Path(path)), info.config(), info.output_shape))
    return out


def _pipeline_models(sweep: Sweep, file: str) -> list[PipelineRef]:
    """Pipelines at a scale, reshaped to each params budget (sized here, once: a budget out of reach
    fails before any case runs); the case's child process rebuilds the same spec."""
    out = []
    for name in sweep.pipelines:
        for t in sweep.params or (None,):
            budget = parse_target(t, "params", f"{file}: params budget") if t else None
            label = name + (f"@{t}" if t else "") + ("" if sweep.scale == "tiny" else "/paper")
            spec = pipeline_spec(name, sweep.scale, budget, sweep.tolerance)
            built = {"spec_sha256": hashlib.sha256(fingerprint(spec).encode()).hexdigest()[:16],
                     "stages": [s.name for s in spec.stages]}
            out.append(PipelineRef(label, name, sweep.scale, budget, sweep.tolerance, built,
                                   {"params": budget} if budget else None, spec.output_shape))
    return out


def _conditioning(sweep: Sweep) -> Any:
    training = {"train", "quality"} & set(sweep.settings.measurement.measure)
    if sweep.cond == "text" and sweep.settings.training.dataset != "digits" and training:
        # size with the text encoder the training will use: the procedural captions' tokens
        return Conditioning("text", sweep.classes, context_dim=TEXT_DIM, context_tokens=MAX_WORDS)
    return Conditioning(sweep.cond, sweep.classes)


def _budgeted(settings: Settings, model: ModelRef) -> Settings:
    """With a train_flops budget, the steps that spend it on this backbone: ceil(budget / (3 x forward FLOPs per
    image x train batch)) (diffusion/config.py's rule), so every size and family trains on the same compute."""
    t = settings.training
    if not t.train_flops or not isinstance(model, BackboneRef) or not model.config:  # not sized: a refused family
        return settings
    flops = count(config_from_dict(FAMILIES.get(model.family).config_cls, model.config)).flops
    steps = max(1, math.ceil(t.train_flops / (3 * flops * t.train_batch)))
    return dataclasses.replace(settings, training=dataclasses.replace(t, train_steps=steps))


def _dataset_identity(settings: Settings, strict: bool, known: dict[str, str | None]) -> str | None:
    """The sha256 of a dataset on disk (once per path); None for an embedded one. Not found here: an error, or
    with ``strict`` False (``plan`` on a machine that does not mount it) None and the path stands for it."""
    t = settings.training
    if t.dataset in EMBEDDED or not {"train", "quality"} & set(settings.measurement.measure):
        return None
    key = f"{t.dataset}\0{t.skip_bad}"
    if key not in known:
        if not Path(t.dataset).exists():
            if strict:
                raise BadInputError(f"dataset {t.dataset}: no such folder or file here; give the path where this "
                                    "machine sees it (dataset = \"PATH\" or --set dataset=PATH)")
            logger.warning(f"dataset {t.dataset} is not found here; case ids will name its content where it is")
            known[key] = None
        else:
            known[key] = dataset_sha256(t.dataset, t.skip_bad)
    return known[key]


def expand(suite: Suite, device: str, strict: bool = True) -> list[Case]:
    """The suite's cases on ``device``; ``strict`` False: a dataset on disk that is not found here is named by its
    path (``plan`` on a login node), not refused."""
    cases: list[Case] = []
    seen: set[str] = set()
    known: dict[str, str | None] = {}
    refusals: dict[str, str] = {}
    for sweep in suite.sweeps:
        m = sweep.settings.measurement
        data = _dataset_identity(sweep.settings, strict, known)
        for model in _models(sweep, suite.source, refusals):
            settings = _budgeted(sweep.settings, model)
            for prec in m.precisions:
                for batch in m.batch_sizes:
                    spec = case_spec(model, settings, batch_size=batch, precision=prec, device=device,
                                     cond=sweep.cond, classes=sweep.classes, protocol=sweep.protocol,
                                     pretrained=bool(sweep.directories or sweep.checkpoint))
                    if data and spec.training is not None:
                        spec = dataclasses.replace(spec, dataset_sha256=data)
                    if spec.case_id in seen:
                        continue
                    seen.add(spec.case_id)
                    shape = "x".join(map(str, model.input or []))
                    name = "/".join(p for p in (model.label, shape, f"b{batch}", prec) if p)
                    cases.append(Case(name, spec, refusals.get(model.label, "")))
    for fault in dict.fromkeys(refusals.values()):  # once per family and fault: its cases become error rows
        logger.warning(f"{fault} (its cases are recorded as errors; the rest of the suite runs)")
    return cases
