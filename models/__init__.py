"""Backbones, presets, sizing and pipelines. ``build``, ``count`` and ``match`` are the API.

The names below load on first use (PEP 562): importing a light module of this package (``models.quantities``,
``models.shapes``) must not import torch, which the CLI's --help and listings never need.
"""

from diffbench.core import lazy
from diffbench.core.guard import only_as_diffbench

only_as_diffbench(__name__, "models")

_WHERE = {"ModelCounts": "api", "build": "api", "count": "api", "load_checkpoint": "api", "resolve": "api",
          "FAMILIES": "families", "PRESETS": "presets", "match": "sizing"}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
