"""Evaluation protocols as data: what a pretrained system is asked to generate and what it is scored against.

A protocol names
- its conditions: ``class`` (``samples`` images, equal per class: image k gets label k mod ``classes``, as
  ADM/DiT's evaluation samples 50 per ImageNet class), ``captions`` (a captions file, one per line, or a
  JSONL with a ``caption``/``text`` field per line, COCO-30K style; the first ``samples`` are used, in order),
  or ``unconditional`` (``samples`` images of a system that takes no condition: DDPM, EDM and LDM's
  unconditional models);
- the sampler settings the paper scored with (a sweep that sets ``sample_steps``/``scheduler``/``guidance``
  itself overrides them);
- the reference (an image folder, an ADM ``.npz`` batch, or a statistics ``.npz``) and the detector that scores
  against it (``inception-v3`` in any of its modes with local weights, or an embedded one);
- for captions, the CLIP that gives the CLIP score (a Hugging Face directory, an open_clip file, or the embedded
  shapes-CLIP).

A protocol's metrics carry its name and the detector's in their qualifier (``fid[coco-30k:inception-v3/clean]``),
so a report never puts FIDs of different protocols or detectors in one column. Files are identified by content:
the case id holds their sha256, not their paths.

The embedded protocols (``digits``, ``shapes``) are the ones systems trained by the harness are scored with
(``bench/evaluate.py``); the protocols here score systems that arrive trained: a diffusers pipeline directory or
a backbone checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.bench.settings import SCHEDULER_NAMES, SUITE_NAME
from diffbench.core.errors import BadInputError, ConfigError
from diffbench.core.files import content_sha256
from diffbench.metrics.detectors import DETECTORS

KINDS = ("class", "captions", "unconditional")


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str
    samples: int
    classes: int = 0
    captions: str = ""
    reference: str = ""
    detector: str = "inception-v3"
    mode: str = ""  # "": the detector's first mode
    weights: str = ""  # the detector's local weights ("": its environment variable, then the caches)
    allow_unverified: bool = False
    clip: str = ""  # captions: "embedded", a Hugging Face CLIP directory or an open_clip checkpoint
    clip_arch: str = "ViT-B-32"
    sample_steps: int | None = None
    scheduler: str | None = None
    guidance: float | None = None
    guide_channels: int | None = None  # guide only the first k channels (DiT's released sampler guides 3 of 4)
    kid: bool = True  # also KID (needs reference images, not a statistics file)
    save_samples: str = ""  # a folder: also write the samples there as PNGs, in a sub-folder per case id
    source: str = ""  # where the protocol's settings come from
    files: dict[str, str] = field(default_factory=dict, hash=False)  # role -> sha256 of each file it reads

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Protocol:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def identity(self) -> dict[str, Any]:
        """What the protocol is, without where its files lie: the case id hashes this."""
        return {k: v for k, v in self.to_json().items()
                if k not in ("captions", "reference", "weights", "clip", "save_samples", "source")}

    def qualifier(self, detector_name: str, mode: str) -> str:
        return f"{self.name}:{detector_name}/{mode}"


# The protocols of the papers, as data. Their files are the user's: a suite names them in [protocols.NAME].
BUILTIN: dict[str, Protocol] = {
    "imagenet-class": Protocol(
        "imagenet-class", "class", samples=50_000, classes=1000, sample_steps=250, scheduler="dit-ddpm",
        guidance=1.5, guide_channels=3, detector="inception-v3", mode="torch-fidelity",
        source="DiT (Peebles & Xie 2023) Sec. 5 / ADM evaluation: 50K samples, DiT's own sampler (250 respaced DDPM "
               "steps, 999 ... 0, with the learned variance, x0 not clipped), cfg 1.5 on the first 3 latent channels "
               "as DiT's sample.py does, against VIRTUAL_imagenet256_labeled.npz"),
    "imagenet-class-uvit": Protocol(
        "imagenet-class-uvit", "class", samples=50_000, classes=1000, sample_steps=50, scheduler="uvit-dpm-solver",
        guidance=1.4, detector="inception-v3", mode="legacy_pytorch",
        source="U-ViT (Bao et al. 2023), U-ViT-H/2 on ImageNet 256 (FID 2.29): 50K samples with U-ViT's own "
               "sampler (eval_ldm_discrete.py: DPM-Solver, 50 steps, its Stable Diffusion betas, the network at "
               "t * 1000), cfg scale 0.4 in U-ViT's form (1.4 here) on every channel, FID by pytorch-fid against "
               "guided-diffusion's ImageNet 256 statistics (VIRTUAL_imagenet256_labeled.npz)"),
    "cifar10-uncond": Protocol(
        "cifar10-uncond", "unconditional", samples=50_000, sample_steps=1000, guidance=1.0, detector="inception-v3",
        mode="torch-fidelity", kid=False,
        source="DDPM (Ho et al. 2020, FID 3.17): 50K unconditional 32 px samples, 1000 ancestral steps, FID against "
               "the 50K CIFAR-10 training images (EDM reports the same protocol with its own 18-step Heun sampler, "
               "not built here)"),
    "celebahq256-uncond": Protocol(
        "celebahq256-uncond", "unconditional", samples=50_000, sample_steps=500, guidance=1.0,
        detector="inception-v3",
        mode="torch-fidelity", kid=False,
        source="LDM (Rombach et al. 2022) Table 1, LDM-4 on CelebA-HQ 256 (FID 5.11, 500 DDIM steps): 50K "
               "unconditional samples, FID against the 30K CelebA-HQ images"),
    "coco-30k": Protocol(
        "coco-30k", "captions", samples=30_000, sample_steps=50, guidance=7.5, detector="inception-v3",
        mode="torch-fidelity", clip="",
        source="COCO-30K zero-shot FID (Imagen, LDM, SD model card): 30K captions of COCO val2014, FID against "
               "the val2014 images, CLIP score with a ViT-L/14 or ViT-B/32 CLIP"),
}

KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "kind": (str, "class, captions or unconditional"),
    "samples": (int, "a positive integer"),
    "classes": (int, "a positive integer"),
    "captions": (str, "a captions file (.txt, one per line, or .jsonl)"),
    "reference": (str, "an image folder, an .npz batch or a statistics .npz"),
    "detector": (str, "a detector name (diffbench list detectors)"),
    "mode": (str, "a mode of the detector"),
    "weights": (str, "a local weights file"),
    "allow_unverified": (bool, "true or false"),
    "clip": (str, "embedded, a Hugging Face CLIP directory or an open_clip checkpoint"),
    "clip_arch": (str, "an open_clip architecture name"),
    "sample_steps": (int, "a positive integer"),
    "guide_channels": (int, "a positive integer (guide only the first k channels)"),
    "scheduler": (str, "own, ddpm, ddim, dpm-solver++, euler, adm-ddpm, adm-ddim, dit-ddpm or uvit-dpm-solver"),
    "guidance": ((int, float), "a non-negative number (1 = no guidance)"),
    "kid": (bool, "true or false"),
    "save_samples": (str, "a folder to write the samples to (PNGs, a sub-folder per case id)"),
}


def _resolve(raw: str, base: Path) -> Path:
    p = Path(raw).expanduser()
    return p if p.is_absolute() else base / p


def _valid(key: str, value: Any) -> bool:
    types = KEYS[key][0]
    if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
        return False
    number: Any = value  # an int or float here
    if key in ("samples", "classes", "sample_steps", "guide_channels"):
        return bool(number >= 1)
    return key != "guidance" or bool(0 <= number < float("inf"))


def parse(name: str, raw: Any, file: str) -> Protocol:
    """A suite's ``[protocols.NAME]`` table (over the built-in of that name, if any), its files checked and hashed."""
    where = f"{file}: protocols.{name}"
    if not SUITE_NAME.fullmatch(name):
        raise ConfigError(f"{where}: a protocol name is a plain name (letters, digits, '.', '_', '-')")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    for key, value in raw.items():
        if key not in KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of {', '.join(sorted(KEYS))})")
        if not _valid(key, value):
            raise ConfigError(f"{where}.{key}: expected {KEYS[key][1]}, got {value!r}")
    base = BUILTIN.get(name)
    if base is None and "kind" not in raw:
        raise ConfigError(f"{where}: give kind = \"class\", \"captions\" or \"unconditional\" (or use a built-in "
                          "protocol: "
                          f"{', '.join(BUILTIN)})")
    proto = dataclasses.replace(base, **raw) if base is not None else Protocol(name=name, **{"samples": 0, **raw})
    return _checked(proto, where, Path(file).resolve().parent)


def _checked(p: Protocol, where: str, folder: Path) -> Protocol:
    if p.kind not in KINDS:
        raise ConfigError(f"{where}.kind: expected class, captions or unconditional, got {p.kind!r}")
    if p.samples < 1:
        raise ConfigError(f"{where}.samples: give the number of images to generate")
    if p.kind == "class" and p.classes < 1:
        raise ConfigError(f"{where}.classes: a class protocol needs the number of classes")
    if p.kind == "class" and p.samples % p.classes:
        raise ConfigError(f"{where}: {p.samples} samples are not equal per class over {p.classes} classes; give a "
                          "multiple of classes")
    if p.scheduler is not None and p.scheduler not in SCHEDULER_NAMES:
        raise ConfigError(f"{where}.scheduler: expected one of {', '.join(SCHEDULER_NAMES)}, got {p.scheduler!r}")
    if p.detector not in DETECTORS:
        raise ConfigError(f"{where}.detector: {DETECTORS.unknown_message(p.detector)}")
    modes = DETECTORS.get(p.detector).modes
    if p.mode and p.mode not in modes:  # checked when the suite is read, not after the sampling
        raise ConfigError(f"{where}.mode: detector {p.detector} has modes {', '.join(modes)}, not {p.mode!r}")
    files: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if not p.reference:
        raise ConfigError(f"{where}.reference: give the reference images or statistics to score against (an image "
                          "folder, an .npz batch or a statistics .npz)")
    if p.save_samples:
        saved = _resolve(p.save_samples, folder)
        if saved.exists() and not saved.is_dir() or saved.is_symlink():
            raise ConfigError(f"{where}.save_samples: {saved} is not a folder (a file or a link is there); give a "
                              "folder for the samples")
        changes["save_samples"] = str(saved)
    for role in ("reference", "captions", "weights", "clip"):
        raw = getattr(p, role)
        if not raw or (role == "clip" and raw == "embedded"):
            continue
        path = _resolve(raw, folder)
        if not path.exists():
            raise BadInputError(f"{where}.{role}: no file or folder at {path}")
        changes[role] = str(path)
        files[role] = content_sha256(path)
    _check_conditions(p, where, changes)
    return dataclasses.replace(p, **changes, files=files)


def _check_conditions(p: Protocol, where: str, changes: dict[str, Any]) -> None:
    """What each kind of protocol conditions on: a captions file with enough captions (and a CLIP, the embedded
    one unless given), or none of the class keys for an unconditional protocol."""
    if p.kind == "captions":
        if not p.captions:
            raise ConfigError(f"{where}.captions: a captions protocol needs a captions file")
        n = len(read_captions(Path(changes["captions"])))
        if n < p.samples:
            raise BadInputError(f"{where}: {changes['captions']} holds {n} captions, fewer than samples = "
                                f"{p.samples}; give more captions or fewer samples")
        if not p.clip:
            changes["clip"] = "embedded"
    elif p.captions or p.clip:
        raise ConfigError(f"{where}: captions and clip apply to a captions protocol, not a {p.kind} one")
    if p.kind == "unconditional" and (p.classes or p.guide_channels):
        raise ConfigError(f"{where}: classes and guide_channels apply to a class protocol; an unconditional one "
                          "samples without a condition")


def read_captions(path: Path) -> list[str]:
    """Captions, in order: one per non-empty line of a text file, or the ``caption`` (or ``text``) field of each
    line of a ``.jsonl``. Lines end at ``\n`` (or ``\r\n``) only: ``str.splitlines`` also splits at U+2028,
    U+0085 and form feeds, which a caption may hold, and every later image would be scored against the wrong
    caption. A leading byte-order mark is dropped. Binary or non-UTF-8 files are refused in one line."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise BadInputError(f"{path}: a binary file (it holds NUL bytes), not a text file of captions")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: not UTF-8 text (byte {e.start}); save the captions as UTF-8") from None
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if path.suffix.lower() != ".jsonl":
        return lines
    out = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BadInputError(f"{path}:{i}: not a JSON object; a .jsonl holds one object per line") from None
        caption = row.get("caption", row.get("text")) if isinstance(row, dict) else None
        if not isinstance(caption, str) or not caption.strip():
            raise BadInputError(f"{path}:{i}: no \"caption\" (or \"text\") string in this line")
        out.append(caption.strip())
    return out


def conditions(p: Protocol) -> tuple[list[int] | None, list[str] | None]:
    """(labels, captions) of the protocol's samples, image k's at index k."""
    if p.kind == "class":
        return [k % p.classes for k in range(p.samples)], None
    if p.kind == "unconditional":
        return None, None
    return None, read_captions(Path(p.captions))[:p.samples]
