"""Backbones, presets, sizing and (later) pipelines. ``build``, ``count`` and ``match`` are the API."""

from diffbench.core.guard import only_as_diffbench

only_as_diffbench(__name__, "models")

from diffbench.models.api import ModelCounts, build, count, load_checkpoint, resolve  # noqa: E402 - after the guard
from diffbench.models.families import FAMILIES  # noqa: E402 - after the guard
from diffbench.models.presets import PRESETS  # noqa: E402 - after the guard
from diffbench.models.sizing import match  # noqa: E402 - after the guard

__all__ = ["FAMILIES", "PRESETS", "ModelCounts", "build", "count", "load_checkpoint", "match", "resolve"]
