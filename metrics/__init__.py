"""Measurements: counting, timing, memory, energy, quality. Knows nothing of the harness."""
