"""Energy: NVML's total-energy counter (millijoules since driver load) read at synchronised edges."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from diffbench.metrics.nvml import handle_for
from diffbench.metrics.reading import Reading


@dataclass
class EnergyMeter:
    device: str
    start_mj: int | None = None
    end_mj: int | None = None
    seconds: float = 0.0
    reason: str | None = None

    def __enter__(self) -> EnergyMeter:
        self._lib, self._handle, self.reason = handle_for(self.device)
        if self._handle is not None:
            try:
                self._sync()
                self.start_mj = int(self._lib.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            except Exception as e:  # pre-Volta cards have no energy counter
                self.reason, self._handle = f"NVML energy counter not supported: {str(e)[:80]}", None
        self._t0 = time.perf_counter()
        return self

    def _sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._sync()
            self.end_mj = int(self._lib.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        self.seconds = time.perf_counter() - self._t0

    def readings(self, images: int) -> dict[str, Reading]:
        if self.start_mj is None or self.end_mj is None:
            why = self.reason or "NVML energy counter not available"
            return {"energy_j_per_image": Reading.unavailable("J", why), "mean_power_w": Reading.unavailable("W", why)}
        joules = (self.end_mj - self.start_mj) / 1e3
        extra = {"joules": joules, "seconds": self.seconds, "images": images}
        if joules <= 0:  # the counter updates every ~100 ms on some cards: too short a window
            why = f"energy window of {self.seconds * 1e3:.0f} ms too short for the NVML counter"
            return {"energy_j_per_image": Reading.unavailable("J", why), "mean_power_w": Reading.unavailable("W", why)}
        return {"energy_j_per_image": Reading(joules / images, "J", extra=extra),
                "mean_power_w": Reading(joules / self.seconds, "W", extra=extra)}
