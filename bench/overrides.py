"""Command-line overrides of a suite's settings: one change without a copied TOML.

``KEY=VALUE`` sets ``[defaults] KEY``; ``defaults.KEY=VALUE`` says so explicitly; ``sweeps.SEL.KEY=VALUE`` sets
``KEY`` in the sweeps that ``SEL`` selects: the sweep of that ``name``, else every sweep whose families, presets or
pipelines include ``SEL``, or ``*`` for all; ``report.KEY=VALUE`` sets the report's choices. ``VALUE`` is read as a
TOML value (``100``, ``0.5``, ``"ddim"``, ``["fp32", "bf16"]``), and as a plain string where it is not one
(``scheduler=ddim``). The suite then validates as if its file had said so, and the run records what was overridden
(suite.resolved.json).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from diffbench.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SELECTORS = ("families", "presets", "pipelines")


def value_of(text: str) -> Any:
    """A TOML value, or the text itself where it is not one."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the CLI's --set) -> {KEY: value}."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train_steps=100 or "
                              "--set sweeps.dit.train_steps=100")
        out[key.strip()] = value_of(text.strip())
    return out


def _sweeps(data: dict[str, Any], selector: str, key: str) -> list[dict[str, Any]]:
    sweeps = data.get("sweeps")
    if not isinstance(sweeps, list) or not all(isinstance(s, dict) for s in sweeps):
        raise ConfigError("the suite has no [[sweeps]] tables to override")
    if selector == "*":
        return sweeps
    named = [s for s in sweeps if s.get("name") == selector]
    chosen = named or [s for s in sweeps if any(isinstance(s.get(k), list) and selector in s[k] for k in SELECTORS)]
    if not chosen:
        names = sorted({str(s["name"]) for s in sweeps if "name" in s})
        raise ConfigError(f"--set sweeps.{selector}.{key}: no sweep is named {selector!r} or includes it (sweep "
                          f"names: {', '.join(names) or 'none'}; or sweeps.*.{key} for all)")
    return chosen


def apply(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the suite's parsed TOML ``data`` with ``overrides`` set."""
    out = copy.deepcopy(data)
    for path, value in overrides.items():
        if not isinstance(path, str):
            raise ConfigError(f"override key {path!r}: a string such as 'train_steps' or 'sweeps.dit.train_steps'")
        parts = path.split(".")
        if len(parts) == 1 or (len(parts) == 2 and parts[0] in ("defaults", "report")):
            table, key = (("defaults", parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
            target = out.setdefault(table, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {path}: the suite's {table} is not a table")
            target[key] = value
        elif len(parts) == 3 and parts[0] == "sweeps" and parts[2]:
            for sweep in _sweeps(out, parts[1], parts[2]):
                sweep[parts[2]] = value
        else:
            raise ConfigError(f"--set {path}: expected KEY, defaults.KEY, report.KEY or sweeps.NAME.KEY")
    return out
