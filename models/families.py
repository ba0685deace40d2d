"""The backbone families, in listing order: importing this module registers every family (and its
paper configurations), and lets a name that is none of them find a family from outside (``models.external``).
What a family is: ``models.family``; each one's entry ends its own module."""

import importlib

from diffbench.models.family import FAMILIES, Family, Inputs, family_of

for _module in ("dit", "uvit", "vit", "unet", "textunet"):  # the order `diffbench list families` shows
    importlib.import_module(f"diffbench.models.{_module}")
importlib.import_module("diffbench.models.external")  # families from outside, by module path or entry point

__all__ = ["FAMILIES", "Family", "Inputs", "family_of"]
