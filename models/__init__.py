"""Backbones, presets, sizing and (later) pipelines. ``build``, ``count`` and ``match`` are the API."""

from diffbench.models.api import ModelCounts, build, count, load_checkpoint, resolve
from diffbench.models.families import FAMILIES
from diffbench.models.presets import PRESETS
from diffbench.models.sizing import match

__all__ = ["FAMILIES", "PRESETS", "ModelCounts", "build", "count", "load_checkpoint", "match", "resolve"]
