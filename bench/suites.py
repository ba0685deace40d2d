"""Suites: TOML files validated into frozen configs, expanded into cases.

A suite has optional ``name`` / ``description``, a ``[defaults]`` table, and one or more
``[[sweeps]]``; each sweep names ``families`` (sized to ``params`` or ``gmacs`` targets at
each of its ``input_shapes``) or ``presets``, and inherits every setting it does not set from the
defaults. Every mistake names the file and the key (or the TOML line) and what was expected.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.bench.accuracy import check_bands
from diffbench.bench.overrides import apply as apply_overrides
from diffbench.bench.protocols import BUILTIN
from diffbench.bench.protocols import parse as parse_protocol
from diffbench.bench.settings import (
    MAX_CLASSES,
    SETTING_KEYS,
    SUITE_NAME,
    Check,
    Settings,
    choices,
    number,
    pos_int,
)
from diffbench.core.errors import BadInputError, ConfigError, UnknownNameError
from diffbench.metrics.specs import HEADLINE, is_headline
from diffbench.models import external
from diffbench.models.families import FAMILIES
from diffbench.models.pipelines import PIPELINES
from diffbench.models.presets import PRESETS
from diffbench.models.pretrained import is_pipeline_dir
from diffbench.models.quantities import SCALINGS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_DIR = Path(__file__).resolve().parent / "suites"
@dataclass(frozen=True)
class Sweep:
    settings: Settings
    families: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    scale: str = "tiny"  # pipelines: paper or tiny scale
    params: tuple[str, ...] = ()
    gmacs: tuple[str, ...] = ()
    input_shapes: tuple[str, ...] = ("4x32x32",)
    cond: str = "class"
    classes: int = 1000
    patch: int = 0  # 0: the family's default
    tolerance: float = 0.02  # largest relative error of a sized model
    scaling: str = "free"  # free: each target sized alone; width: a family's targets share structure and depth
    checkpoint: str | None = None  # backbone weights (official layout), resolved against the suite's folder
    autoencoder: str | None = None  # a checkpoint's latents: a local diffusers AutoencoderKL directory decodes them
    protocol: Any = None  # bench/protocols.Protocol: how pretrained systems (directories, checkpoints) are scored
    directories: tuple[str, ...] = ()  # pipelines that are diffusers directories (resolved paths)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    source: str
    sweeps: tuple[Sweep, ...]
    report: dict[str, str] = field(default_factory=dict)  # [report]: choices of the report (its headline metric)
    overrides: dict[str, Any] = field(default_factory=dict)  # set on the command line (--set), recorded by the run


# --- validation -----------------------------------------------------------------------------------

def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


SWEEP_KEYS: dict[str, tuple[Check, str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "families": (_strs, "a non-empty list of family names"),
    "presets": (_strs, "a non-empty list of preset names"),
    "pipelines": (_strs, "a non-empty list of pipeline names or diffusers pipeline directories"),
    "scale": (choices(("paper", "tiny")), "paper or tiny"),
    "params": (_strs, "a non-empty list of targets such as \"33M\""),
    "gmacs": (_strs, "a non-empty list of targets such as \"6G\""),
    "input_shapes": (_strs, "a non-empty list of input shapes such as \"4x32x32\""),
    "inputs": (_strs, "a non-empty list of input shapes such as \"4x32x32\" (the old name of input_shapes)"),
    "cond": (choices(("class", "text", "none")), "one of class, text, none"),
    "classes": (lambda v: pos_int(v) and v <= MAX_CLASSES, f"a positive integer (at most {MAX_CLASSES:,})"),
    "patch": (pos_int, "a positive integer"),
    "tolerance": (lambda v: number(v) and 0 < v < 1, "a number between 0 and 1"),
    "scaling": (choices(SCALINGS), " or ".join(SCALINGS)),
    "checkpoint": (lambda v: isinstance(v, str) and bool(v.strip()), "a path to a .pt, .pth or .safetensors file"),
    "autoencoder": (lambda v: isinstance(v, str) and bool(v.strip()), "a diffusers AutoencoderKL directory"),
    "protocol": (lambda v: isinstance(v, str) and bool(v.strip()), "the name of a protocol ([protocols.NAME])"),
    **SETTING_KEYS,
}
TOP_KEYS = {"name", "description", "defaults", "sweeps", "protocols", "report"}
REPORT_KEYS = {"metric": f"the headline quality metric: {HEADLINE}"}


def _report(raw: Any, file: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: report: expected a table, got {raw!r}")
    for key, value in raw.items():
        if key not in REPORT_KEYS:
            raise ConfigError(f"{file}: report.{key}: unknown key (expected one of {', '.join(sorted(REPORT_KEYS))})")
        if not is_headline(value):
            raise ConfigError(f"{file}: report.{key}: expected {REPORT_KEYS[key]}, got {value!r}")
    return dict(raw)


def _check_table(table: Any, allowed: dict[str, tuple[Check, str]], where: str, file: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {where}: expected a table")
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{file}: {where}.{key}: unknown key (expected one of {', '.join(sorted(allowed))})")
        check, expected = allowed[key]
        if isinstance(value, list) and not value:
            raise ConfigError(f"{file}: {where}.{key}: empty list; expected {expected}")
        if key == "accept" and check_bands(value):  # the band that is wrong, and why (an unknown metric, ...)
            raise ConfigError(f"{file}: {where}.accept: {check_bands(value)}")
        if not check(value):
            raise ConfigError(f"{file}: {where}.{key}: expected {expected}, got {value!r}")


def parse(text: str, file: str, name: str, overrides: Mapping[str, Any] | None = None) -> Suite:
    """The suite in ``text``, with ``overrides`` (bench/overrides.py) set before it is validated."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: TOML syntax error: {e}") from None
    except RecursionError:
        raise ConfigError(f"{file}: arrays or tables nested too deeply to be a suite") from None
    if overrides:
        try:
            data = apply_overrides(data, overrides)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{file}: {sorted(unknown)[0]}: unknown key (expected one of {', '.join(sorted(TOP_KEYS))})")
    if "name" in data and not (isinstance(data["name"], str) and SUITE_NAME.fullmatch(data["name"])):
        raise ConfigError(f"{file}: name: expected a plain name (letters, digits, '.', '_', '-'; at most 64, not "
                          f"starting with '.'), got {data['name']!r}")
    if not isinstance(data.get("description", ""), str):
        raise ConfigError(f"{file}: description: expected a string, got {data['description']!r}")
    _check_table(data.get("defaults", {}), SETTING_KEYS, "defaults", file)
    defaults = Settings().updated(data.get("defaults", {}))
    protocols = _protocols(data.get("protocols", {}), file)
    raw_sweeps = data.get("sweeps")
    if not isinstance(raw_sweeps, list) or not raw_sweeps:
        raise ConfigError(f"{file}: sweeps: expected one or more [[sweeps]] tables")
    sweeps = []
    for i, raw in enumerate(raw_sweeps):
        where = f"sweeps[{i}]"
        _check_table(raw, SWEEP_KEYS, where, file)
        explicit = set(data.get("defaults", {})) | set(raw)  # settings the suite gives, not Settings' defaults
        sweeps.append(_sweep(raw, defaults, where, file, protocols, explicit))
    return Suite(str(data.get("name", name)), str(data.get("description", "")), file, tuple(sweeps),
                 _report(data.get("report", {}), file), dict(overrides or {}))


def _protocols(raw: Any, file: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: protocols: expected tables [protocols.NAME]")
    return {name: parse_protocol(name, table, file) for name, table in raw.items()}


def _directories(pipes: list[str], where: str, file: str) -> tuple[list[str], list[str]]:
    """(registered pipeline names, diffusers directories resolved against the suite's folder)."""
    names, dirs = [], []
    for n in pipes:
        if n in PIPELINES:
            names.append(n)
            continue
        path = Path(n).expanduser()
        path = path if path.is_absolute() else Path(file).resolve().parent / path
        if is_pipeline_dir(path):
            dirs.append(str(path))
        elif "/" in n or path.exists():
            raise BadInputError(f"{file}: {where}.pipelines: {path} is not a diffusers pipeline directory (no "
                                "model_index.json); save one with pipeline.save_pretrained(DIR)")
        else:
            raise UnknownNameError(f"{file}: {where}.pipelines: {PIPELINES.unknown_message(n)}, or a diffusers "
                                   "pipeline directory")
    return names, dirs


def _pretrained(raw: dict[str, Any], settings: Settings, explicit: set[str], protocols: dict[str, Any],
                pretrained: bool, directories: bool, where: str, file: str) -> tuple[Settings, Any]:
    """A sweep of systems that arrive trained (diffusers directories, checkpoints): they are not trained here; they
    are scored by a protocol, whose sampler settings apply unless the suite sets its own. (settings, protocol)"""
    name = raw.get("protocol")
    if not pretrained:
        if name:
            raise ConfigError(f"{file}: {where}.protocol: applies to pretrained systems (diffusers directories, or "
                              "a sweep with a checkpoint); systems trained here are scored on their dataset")
        if settings.sampling.scheduler == "own":
            raise ConfigError(f"{file}: {where}.scheduler: own applies to diffusers directories; give ddpm, ddim, "
                              "dpm-solver++ or euler")
        return settings, None
    measure = settings.measurement.measure
    if "measure" not in explicit:  # the default measure of a pretrained system: everything but training
        measure = tuple(m for m in measure if m != "train" and (m != "quality" or name))
    elif "train" in measure:
        raise ConfigError(f"{file}: {where}.measure: a pretrained system is not trained here (fine-tuning is not "
                          "built); drop train")
    if "quality" in measure and not name:
        raise ConfigError(f"{file}: {where}: scoring a pretrained system needs a protocol: add protocol = \"NAME\" "
                          "and a [protocols.NAME] table with its reference (built in: " + ", ".join(BUILTIN) + ")")
    protocol = None
    if name:
        if name not in protocols:
            known = ", ".join(sorted(protocols)) or "none"
            raise ConfigError(f"{file}: {where}.protocol: no [protocols.{name}] table in this suite (it has {known})")
        protocol = protocols[name]
    updates: dict[str, Any] = {"measure": measure}  # flat setting keys
    if directories and "scheduler" not in explicit:  # a diffusers directory samples with its own scheduler
        updates["scheduler"] = "own"
    for key in ("sample_steps", "scheduler", "guidance"):
        if key not in explicit and protocol is not None and getattr(protocol, key) is not None:
            updates[key] = getattr(protocol, key)
    if not directories and updates.get("scheduler", settings.sampling.scheduler) == "own":
        raise ConfigError(f"{file}: {where}: scheduler own applies to diffusers directories; a checkpoint samples "
                          "with ddpm, ddim, dpm-solver++, euler, adm-ddpm, adm-ddim, dit-ddpm or uvit-dpm-solver (set "
                          "scheduler in the sweep or the protocol)")
    classes = raw.get("classes", Sweep.classes)
    if protocol is not None and not directories and (protocol.kind == "unconditional") != (raw.get("cond") == "none"):
        raise ConfigError(f"{file}: {where}: protocol {protocol.name} is {protocol.kind}; a checkpoint it scores is "
                          + ("sized with cond = \"none\"" if protocol.kind == "unconditional" else
                             "conditioned: use an unconditional protocol for cond = \"none\""))
    if protocol is not None and protocol.kind == "class" and not directories and protocol.classes > classes:
        raise ConfigError(f"{file}: {where}: protocol {protocol.name} samples {protocol.classes} classes; the sweep's "
                          f"backbone knows {classes} (classes = {classes})")
    return settings.updated(updates), protocol


def _sweep(raw: dict[str, Any], defaults: Settings, where: str, file: str, protocols: dict[str, Any] | None = None,
           explicit: set[str] | None = None) -> Sweep:
    fams, presets, pipes = raw.get("families", []), raw.get("presets", []), raw.get("pipelines", [])
    pipes, dirs = _directories(pipes, where, file)
    if dirs and pipes:
        raise ConfigError(f"{file}: {where}.pipelines: give built-in pipelines and diffusers directories in "
                          "separate sweeps (one is trained here, the other arrives trained)")
    if dirs and raw.get("params"):
        raise ConfigError(f"{file}: {where}.params: a diffusers directory is measured as saved; params budgets "
                          "reshape built-in pipelines")
    pipes = pipes or dirs
    if sum(map(bool, (fams, presets, pipes))) != 1:
        raise ConfigError(f"{file}: {where}: give exactly one of families, presets or pipelines")
    if pipes and raw.get("gmacs"):
        raise ConfigError(f"{file}: {where}: pipelines take a params budget, not gmacs targets")
    if pipes and (raw.get("prediction") or defaults.training.prediction) not in (None, "epsilon"):
        raise ConfigError(f"{file}: {where}: prediction applies to backbone sweeps (a pipeline trains each part with "
                          "its paper's prediction); set prediction = \"epsilon\" in this sweep")
    for key, fix in (("train_flops", "set train_steps"), ("eval_every", "set eval_every = 0")):
        if pipes and (raw.get(key) or getattr(defaults.training, key)):
            raise ConfigError(f"{file}: {where}: {key} applies to backbone sweeps (a pipeline trains several parts "
                              f"in turn, each to its steps); {fix} in this sweep")
    for registry, names, key in ((FAMILIES, fams, "families"), (PRESETS, presets, "presets"),
                                 (PIPELINES, [] if dirs else pipes, "pipelines")):
        for n in names:
            outside = registry is FAMILIES and (external.is_reference(n) or n in external.installed())
            if n not in registry and not outside:  # a family from outside is imported at expansion
                raise UnknownNameError(f"{file}: {where}.{key}: {registry.unknown_message(n)}")
    if raw.get("scaling") == "width" and not fams:
        raise ConfigError(f"{file}: {where}.scaling: applies to families sized to params or gmacs targets; remove it")
    if fams and bool(raw.get("params")) == bool(raw.get("gmacs")):
        raise ConfigError(f"{file}: {where}: families need exactly one of params or gmacs targets")
    if "inputs" in raw:  # one spelling everywhere (API input_shape=, CLI --input-shape); the old key still reads
        if "input_shapes" in raw:
            raise ConfigError(f"{file}: {where}: give input_shapes only (inputs is its old name)")
        raw = {("input_shapes" if k == "inputs" else k): v for k, v in raw.items()}
    kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()
                          if k in SWEEP_KEYS and k not in SETTING_KEYS and k not in ("name", "protocol")}
    settings = _dataset_resolved(defaults.updated(raw), file)
    if dirs:
        kw["pipelines"], kw["directories"] = (), tuple(dirs)
    if "checkpoint" in kw:
        kw["checkpoint"] = _checkpoint(kw["checkpoint"], bool(pipes) and not dirs, where, file)
    if "autoencoder" in kw:
        if "checkpoint" not in kw:
            raise ConfigError(f"{file}: {where}.autoencoder: decodes a checkpoint's latents; give checkpoint too")
        kw["autoencoder"] = _folder(kw["autoencoder"], where + ".autoencoder", file)
    settings, protocol = _pretrained(raw, settings, explicit if explicit is not None else set(raw),
                                     protocols or {}, bool(dirs or "checkpoint" in kw), bool(dirs), where, file)
    return Sweep(settings=settings, protocol=protocol, **kw)


def _dataset_resolved(settings: Settings, file: str) -> Settings:
    """A dataset path relative to the suite's folder, as every path in a suite is (a built-in suite's, given with
    --set, relative to the working directory); the embedded names as they are."""
    name = settings.training.dataset
    if name in ("digits", "shapes"):
        return settings
    path = Path(name).expanduser()
    if not path.is_absolute():
        base = Path.cwd() if Path(file).resolve().parent == BUILTIN_DIR else Path(file).resolve().parent
        path = base / path
    return dataclasses.replace(settings, training=dataclasses.replace(settings.training, dataset=str(path)))


def _folder(raw: str, where: str, file: str) -> str:
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else Path(file).resolve().parent / path
    if not (path / "config.json").is_file():
        raise BadInputError(f"{file}: {where}: no diffusers model directory at {path} (config.json missing); save "
                            "one with save_pretrained")
    return str(path)


def _checkpoint(raw: str, pipelines: bool, where: str, file: str) -> str:
    """A sweep's backbone checkpoint: an existing file, for cases that measure (and score) the network as it is."""
    if pipelines:
        raise ConfigError(f"{file}: {where}.checkpoint: applies to presets and families; a pipeline loads its "
                          "weights with 'diffbench sample --checkpoint'")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path(file).resolve().parent / path
    if not path.is_file():
        raise BadInputError(f"{file}: {where}.checkpoint: no file at {path}")
    return str(path)


def load(spec: str, overrides: Mapping[str, Any] | None = None) -> Suite:
    """A built-in suite name (``smoke``) or a path to a TOML file, with ``overrides`` (``--set``) applied."""
    path = Path(spec)
    if not path.suffix and (BUILTIN_DIR / f"{spec}.toml").is_file():
        path = BUILTIN_DIR / f"{spec}.toml"
    if not path.is_file():
        builtin = sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))
        raise ConfigError(f"no suite {spec!r}: not a file, and the built-in suites are {', '.join(builtin)}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a suite is a TOML file, which is UTF-8") from None
    stem = path.stem if SUITE_NAME.fullmatch(path.stem) else re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip(".")
    return parse(text, str(path), stem[:64] or "suite", overrides)


def builtin_suites() -> list[Suite]:
    return [load(p.stem) for p in sorted(BUILTIN_DIR.glob("*.toml"))]
