"""The backbone families, in listing order: importing this module registers every family (and its
paper configurations). What a family is: ``models.family``; each one's entry ends its own module."""

import importlib

from diffbench.models.family import FAMILIES, Family, Inputs, family_of

for _module in ("dit", "uvit", "vit", "unet", "textunet"):  # the order `diffbench list families` shows
    importlib.import_module(f"diffbench.models.{_module}")

__all__ = ["FAMILIES", "Family", "Inputs", "family_of"]
