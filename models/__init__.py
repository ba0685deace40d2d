"""Backbones, presets, sizing and (later) pipelines. ``build``, ``count`` and ``match`` are the API."""

from models.api import ModelCounts, build, count, load_checkpoint, resolve
from models.families import FAMILIES
from models.presets import PRESETS
from models.sizing import match

__all__ = ["FAMILIES", "PRESETS", "ModelCounts", "build", "count", "load_checkpoint", "match", "resolve"]
