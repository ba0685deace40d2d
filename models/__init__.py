"""Backbones, presets, sizing and (later) pipelines. ``build``, ``count`` and ``match`` are the API."""

from models.api import ModelCounts, build, count, load_checkpoint, resolve
from models.families import FAMILIES
from models.presets import PRESETS

__all__ = ["FAMILIES", "PRESETS", "ModelCounts", "build", "count", "load_checkpoint", "match", "resolve"]


def match(*args, **kwargs):  # noqa: ANN002, ANN003 - re-exported lazily to keep import light
    from models.sizing import match as _match

    return _match(*args, **kwargs)
