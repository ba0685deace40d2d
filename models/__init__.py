"""Backbones, presets, sizing and pipelines. ``build``, ``count`` and ``match`` are the API.

The names below load on first use (PEP 562): importing a light module of this package (``models.quantities``,
``models.shapes``) must not import torch, which the CLI's --help and listings never need.
"""

from typing import Any

from diffbench.core.guard import only_as_diffbench

only_as_diffbench(__name__, "models")

_WHERE = {"ModelCounts": "api", "build": "api", "count": "api", "load_checkpoint": "api", "resolve": "api",
          "FAMILIES": "families", "PRESETS": "presets", "match": "sizing"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'diffbench.models' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"diffbench.models.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
