"""Detectors: one contract, uint8 NCHW RGB in, float64 features out.

``features(images)`` returns a dict: ``pool`` (the Frechet-distance features) always,
``logits`` (Inception Score) and ``spatial`` (sFID) where the detector has them. Every
detector names itself, its mode and its weights' sha256, and says whether the weights were
verified, so that a result can say exactly what it was computed with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from diffbench.core.errors import ConfigError
from diffbench.core.registry import Registry

if TYPE_CHECKING:  # the registry is listed without torch; the detectors' own modules load when one is built
    import numpy as np
    import torch

INCEPTION_MODES = ("torch-fidelity", "clean", "legacy_tensorflow", "legacy_pytorch")  # metrics/inception.py
# the detectors trained by scripts/train_detectors.py (metrics/embedded.py): feature width, weights file, label sets
EMBEDDED_DIM = 64
EMBEDDED: dict[str, dict[str, Any]] = {
    "digits": {"description": "embedded CNN trained on scikit-learn's digits (64-d features; offline, not Inception)",
               "file": "digits.safetensors", "classes": (10,)},
    "shapes": {"description": "embedded CNN trained on the procedural shapes (64-d features; offline, not Inception)",
               "file": "shapes.safetensors", "classes": (3, 6, 5, 2)},
}


class Detector(Protocol):
    name: str
    mode: str
    weights_sha256: str
    verified: bool

    def features(self, images: torch.Tensor) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    description: str
    modes: tuple[str, ...]
    build: Callable[..., Detector]  # (mode, weights, allow_unverified, device) -> Detector
    outputs: tuple[str, ...]


DETECTORS: Registry[DetectorSpec] = Registry("detector", "feature networks for FID and relatives")


def build_detector(name: str, mode: str | None = None, weights: str | None = None, allow_unverified: bool = False,
                   device: str = "cpu") -> Detector:
    spec = DETECTORS.get(name)
    mode = mode or spec.modes[0]
    if mode not in spec.modes:
        raise ConfigError(f"detector {name} has modes {', '.join(spec.modes)}, not {mode!r}")
    return spec.build(mode=mode, weights=weights, allow_unverified=allow_unverified, device=device)


def describe(det: Detector) -> dict[str, Any]:
    return {"detector": det.name, "mode": det.mode, "weights_sha256": det.weights_sha256, "verified": det.verified}


def _inception(**kw: Any) -> Detector:
    return importlib.import_module("diffbench.metrics.inception").build(**kw)  # type: ignore[no-any-return]


def _embedded(name: str) -> Callable[..., Detector]:
    def build(**kw: Any) -> Detector:
        return importlib.import_module("diffbench.metrics.embedded").build_detector(name)(**kw)  # type: ignore[no-any-return]

    return build


def _register() -> None:
    DETECTORS.add("inception-v3", DetectorSpec(
        "inception-v3", "Inception-v3 pool3 (2048-d) through torch-fidelity / clean-fid, from a local weights file",
        INCEPTION_MODES, _inception, ("pool", "logits", "spatial")))
    for name, spec in EMBEDDED.items():
        DETECTORS.add(name, DetectorSpec(name, spec["description"], ("embedded",), _embedded(name), ("pool",)))


_register()
