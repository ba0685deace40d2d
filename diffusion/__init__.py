"""Diffusion itself, apart from the harness: the forward process and diffusers' samplers
(``process``), training to a budget (``training``, ``pipeline_training``), seeded sampling with one
reverse-process loop (``sampling``, ``pipeline_sampling``) and the embedded datasets (``datasets``).
Imports ``core``, ``models`` and ``metrics``; never ``bench``."""

from diffbench.core.guard import only_as_diffbench

only_as_diffbench(__name__, "diffusion")
