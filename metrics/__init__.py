"""Measurements: counting, timing, memory, energy, quality. Knows nothing of the harness."""

from diffbench.core.guard import only_as_diffbench

only_as_diffbench(__name__, "metrics")
