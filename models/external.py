"""Families from outside diffbench: a user's own backbone, found two ways and then a family like the built-in five.

- A module path, ``my_pkg.nets:MYNET`` (a suite's ``families``, the CLI's family arguments): the module is imported
  with the suite's folder (or the working directory) and ``PYTHONPATH`` searched, and ``MYNET`` must be a
  :class:`~diffbench.models.family.Family`.
- An installed package's entry point in the group ``diffbench.families`` (``mynet = "my_pkg.nets:MYNET"`` in its
  ``pyproject.toml``): the family is then named by the entry point's name, which must be the family's.

Either way the family is checked against the contract on first use (:func:`check`: one line naming the family and
the fault) and registered under its own name. Cases run in fresh processes, so a case's spec carries the family's
:class:`Origin` (its module path, the sha256 of its source, the folder searched) and the case's process imports it
again (:func:`ensure`). The sha256 is part of the case id: editing the family's code makes new cases.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffbench.core.errors import ConfigError, FamilyError
from diffbench.models.about import ENTRY_POINTS
from diffbench.models.family import CONDITION_KINDS, FAMILIES, Family

_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
CHECK_CLASSES = 10  # the first-use check builds class-conditional configs for this many classes
_NAME = re.compile(r"[A-Za-z][\w.+-]*")  # labels use @ and /, spec strings : and ,


@dataclass(frozen=True)
class Origin:
    """Where a family from outside came from: enough for a case's process to import it again."""

    module: str  # "pkg.mod:NAME"
    sha256: str  # of its source (:func:`source_sha256`): the identity, where the module path is only a name
    search: str  # the folder put first on sys.path to import it ("" for none); not part of the identity

    def to_json(self) -> dict[str, str]:
        return {"module": self.module, "sha256": self.sha256, "search": self.search}


ORIGINS: dict[str, Origin] = {}  # family name -> where it came from (built-in families have none)
_BY_REFERENCE: dict[str, str] = {}  # "pkg.mod:NAME" -> family name


def is_reference(name: str) -> bool:
    """``pkg.mod:NAME``: a module path, as opposed to a family's name."""
    return bool(_REFERENCE.fullmatch(name))


def installed() -> dict[str, str]:
    """The families installed packages declare: entry point name -> ``pkg.mod:NAME``."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)}


def find(name: str, search: str | Path | None = None) -> Family | None:
    """The family a module path or an installed entry point names (imported, checked and registered on first use);
    None when ``name`` is neither."""
    if is_reference(name):
        return load(name, search)
    ref = installed().get(name)
    if ref is None:
        return None
    fam = load(ref, "")  # installed: found where Python finds installed packages
    if fam.name != name:
        raise FamilyError(f"family {ref}: its entry point is named {name!r} but the family {fam.name!r}; give the "
                          f"entry point (group {ENTRY_POINTS}) the family's name")
    return fam


def load(ref: str, search: str | Path | None = None, sha256: str | None = None) -> Family:
    """Import ``pkg.mod:NAME`` (``search``, default the working directory, first on ``sys.path``, as a script's folder
    is; ``""``: nothing added), check the family and register it; again for the same module path: the family already
    registered. ``sha256``: the source the suite was expanded with, which this one must be."""
    if ref in _BY_REFERENCE:
        fam = FAMILIES.get(_BY_REFERENCE[ref])
    else:
        if not is_reference(ref):
            raise ConfigError(f"{ref!r} is not a module path; write a family from outside as package.module:NAME")
        module_name, attr = ref.split(":")
        folder = "" if search == "" else str(Path(search or os.getcwd()).resolve())
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)  # kept: the family's module may import more of its package later
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 - the user's module: any error is its fault, said in one line
            raise FamilyError(f"family {ref}: importing {module_name} failed ({type(e).__name__}: "
                              f"{_short(e)}); searched {folder or 'installed packages'} and PYTHONPATH") from None
        found = getattr(module, attr, None)
        if not isinstance(found, Family):
            raise FamilyError(f"family {ref}: {module_name}.{attr} is "
                              f"{'missing' if found is None else 'a ' + type(found).__name__}, not a diffbench Family "
                              "(from diffbench import Family; see docs/family.md)")
        fam = found
        check(fam, ref)
        if fam.name in FAMILIES and FAMILIES.get(fam.name) is not fam:
            raise FamilyError(f"family {ref} is named {fam.name!r}, as another family already is; rename it")
        if fam.name not in FAMILIES:
            FAMILIES.add(fam.name, fam)
        ORIGINS[fam.name] = Origin(ref, source_sha256(module_name), folder)
        _BY_REFERENCE[ref] = fam.name
    if sha256 is not None and ORIGINS[fam.name].sha256 != sha256:
        raise FamilyError(f"family {fam.name}: its source ({ref}) changed since the suite was expanded; run the suite "
                          "again (the edited family makes new cases)")
    return fam


def ensure(origin: dict[str, Any] | None) -> None:
    """In a case's process: import the family its spec names, from the source it was expanded with."""
    if origin:
        load(origin["module"], origin.get("search"), origin.get("sha256"))


def origin(name: str) -> dict[str, str] | None:
    """The origin of a family from outside, as a spec carries it; None for a built-in family."""
    o = ORIGINS.get(name)
    return o.to_json() if o else None


def source_sha256(module_name: str) -> str:
    """sha256 of the family's source: every ``.py`` file of its top-level package (by relative path and content),
    or its one file. Editing any of them, not only the module that defines the family, makes new cases; code in
    other top-level packages it imports is not covered."""
    top = sys.modules[module_name.split(".")[0]]
    paths = getattr(top, "__path__", None)
    h = hashlib.sha256()
    if paths:
        root = Path(list(paths)[0])
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        root, files = Path(str(top.__file__)).parent, [Path(str(top.__file__))]
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def check(fam: Family, ref: str | None = None) -> None:
    """The contract, checked once when a family from outside is first used: what it declares (one line naming the
    first fault), then a forward pass of its smallest config for every condition it takes."""
    who = f"family {fam.name}" + (f" ({ref})" if ref else "")
    if not isinstance(fam.name, str) or not _NAME.fullmatch(fam.name):
        raise FamilyError(f"family {ref}: its name {fam.name!r} must start with a letter and hold only letters, "
                          "digits and . + - _ (labels add @ and /)")
    if not (isinstance(fam.config_cls, type) and dataclasses.is_dataclass(fam.config_cls)):
        raise FamilyError(f"{who}: its config_cls {getattr(fam.config_cls, '__name__', fam.config_cls)!r} is not a "
                          "dataclass; decorate the config class with @dataclass(frozen=True)")
    try:
        config = fam.config_cls()
    except Exception as e:  # noqa: BLE001 - the family's own code
        raise FamilyError(f"{who}: {fam.config_cls.__name__}() failed ({type(e).__name__}: {_short(e)}); give "
                          "every config field a default") from None
    if not callable(getattr(config, "build", None)):
        raise FamilyError(f"{who}: {fam.config_cls.__name__} has no build() method returning the network")
    for what in ("width_field", "depth_field"):
        field = getattr(fam, what)
        if not isinstance(getattr(config, str(field), None), int):
            raise FamilyError(f"{who}: {what} {field!r} is not an int field of {fam.config_cls.__name__}")
    step = fam.width_step
    if not callable(step) and not (isinstance(step, int) and not isinstance(step, bool) and step > 0):
        raise FamilyError(f"{who}: width_step must be a positive int or a function of the config, got {step!r}")
    odd = [c for c in fam.conditions if c not in CONDITION_KINDS] or ([] if fam.conditions else ["nothing"])
    if odd:
        raise FamilyError(f"{who}: conditions {tuple(fam.conditions)!r} holds {odd[0]!r}; "
                          f"use some of {', '.join(CONDITION_KINDS)}")
    small = fam.tiny() if fam.tiny is not None else config
    for kind in fam.conditions:
        forward_check(fam, small, kind, who)


def forward_check(fam: Family, config: Any, kind: str, who: str) -> None:
    """Build ``config`` for this condition and denoise a batch of 2: the output must have the input's shape (or twice
    its channels). On the CPU when the family gives ``tiny`` (labels are then checked up to the null class), else on
    the meta device, which allocates nothing, and on the CPU where meta cannot run the network."""
    for device in [torch.device("cpu")] if fam.tiny is not None else [torch.device("meta"), torch.device("cpu")]:
        try:
            shape, out = _denoised(fam, config, kind, device)
            break
        except FamilyError:
            raise
        except Exception as e:  # noqa: BLE001 - the family's own code
            if device.type == "meta":
                continue
            null = " (labels run 0 .. num_classes, the last the null class: a table needs num_classes + 1 rows)"
            raise FamilyError(f"{who}: building and denoising its {'tiny ' if fam.tiny else ''}config with {kind} "
                              f"conditioning failed ({type(e).__name__}: {_short(e)})"
                              f"{null if kind == 'class' and 'index' in str(e).lower() else ''}") from None
    want = [(2, *shape), (2, 2 * shape[0], *shape[1:])]
    got = tuple(getattr(out, "shape", ()))
    if got not in want:
        raise FamilyError(f"{who}: denoise returned shape {got} for an input of {want[0]}; it must return the "
                          f"input's shape (or {want[1]}, a learned variance)")
    if out.device.type == "cpu" and not bool(torch.isfinite(out).all()):
        raise FamilyError(f"{who}: denoise returned NaN or inf for its {'tiny ' if fam.tiny else ''}config with "
                          f"{kind} conditioning; check its initialisation")


def _denoised(fam: Family, config: Any, kind: str, device: torch.device) -> tuple[tuple[int, ...], Any]:
    """(input shape, output) of one denoising call at batch 2 on ``device``, the config set to take ``kind``."""
    cfg = fam.condition(config, kind, CHECK_CLASSES, 5, 16) if fam.condition is not None else config
    with torch.device(device):
        model = cfg.build()
        inputs = fam.make_inputs(cfg, 2, device, torch.float32)
    if kind == "class" and "y" in inputs and device.type == "cpu":
        inputs["y"] = torch.tensor([0, CHECK_CLASSES])  # a label and the null class (index num_classes)
    with torch.no_grad():
        return tuple(fam.input_shape(cfg)), fam.denoise(model, inputs)


FAMILIES.fallback = find
FAMILIES.hint = (f"; a family from outside is named by its module path (package.module:NAME) or installed under the "
                 f"entry point group {ENTRY_POINTS}")
