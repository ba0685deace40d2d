"""Paper configurations as data, keyed by the papers' names, with their sources and reported numbers.
Each family module ends with its own table (as DiT's ``models.py`` ends with its configs).

``reference`` holds the exact counts of the official code (docs/reference.md: ``params``,
``params_trainable``, ``gmacs``) and what the paper reports (``paper_gflops``, ``paper_fid``,
``paper_params``), so that tests and reports can set measured beside reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffbench.core.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    config: Any  # the family's frozen config dataclass
    source: str
    reference: dict[str, Any] = field(default_factory=dict)


PRESETS: Registry[Preset] = Registry("preset", "paper configurations (docs/reference.md)")


def add_preset(name: str, family: str, config: Any, source: str, **reference: Any) -> None:
    """Called at the end of each family module, for its paper's configurations."""
    PRESETS.add(name, Preset(name, family, config, source, reference))
