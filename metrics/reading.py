"""A reading: a value with its unit, or "not available" with the reason. Never a made-up number."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reading:
    value: float | None
    unit: str
    reason: str | None = None  # why the value is None ("no CUDA device", "NVML not available: ...")
    samples: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unavailable(cls, unit: str, reason: str) -> Reading:
        return cls(None, unit, reason)

    @property
    def available(self) -> bool:
        return self.value is not None
