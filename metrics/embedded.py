"""Embedded detectors: small networks trained on the embedded datasets by ``scripts/train_detectors.py``.

They make the quality metrics work offline. Their numbers are comparable with each other
(same detector, same weights hash), never with Inception-based FIDs from papers: reports
keep them in separate columns. Weights ship in ``metrics/assets`` as safetensors, with their
sha256 in ``metrics/assets/SHA256SUMS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from diffbench.core.errors import BadInputError, MissingWeightsError
from diffbench.metrics.captions import MAX_WORDS, VOCAB
from diffbench.metrics.detectors import EMBEDDED, EMBEDDED_DIM
from diffbench.metrics.weights import sha256_of

ASSETS = Path(__file__).resolve().parent / "assets"
FEATURE_DIM = EMBEDDED_DIM
RESOLUTION = 32  # every embedded detector sees 32x32 RGB


DETECTOR_SPECS = EMBEDDED  # name -> description, weights file, label sets (listed in metrics/detectors.py)
CLIP_FILE = "shapes-clip.safetensors"


class ConvEncoder(nn.Module):
    """(N, 3, 32, 32) float in [-1, 1] -> (N, 64)."""

    def __init__(self, dim: int = FEATURE_DIM) -> None:
        super().__init__()
        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU(), nn.AvgPool2d(2))
        self.body = nn.Sequential(block(3, 32), block(32, 64), block(64, 96), nn.Conv2d(96, dim, 4), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeatureNet(nn.Module):
    """Encoder plus one linear head per label set (trained as classifiers; features are the encoder's)."""

    def __init__(self, classes: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = ConvEncoder()
        self.heads = nn.ModuleList([nn.Linear(FEATURE_DIM, k) for k in classes])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.encoder(x)
        return [h(f) for h in self.heads]


class TextEncoder(nn.Module):
    """Word tokens -> (N, 64): position-aware word embeddings, mean-pooled over words, then an MLP."""

    def __init__(self, dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.words = nn.Embedding(len(VOCAB), dim, padding_idx=0)
        self.positions = nn.Embedding(MAX_WORDS, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens > 0).float()[..., None]
        h = (self.words(tokens) + self.positions.weight[None, : tokens.shape[1]]) * mask
        return self.mlp(h.sum(1) / mask.sum(1).clamp(min=1))


class ShapesCLIP(nn.Module):
    """A CLIP-style pair of encoders with a learned temperature (Radford et al. 2021, in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = ConvEncoder()
        self.text = TextEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW at any size -> float in [-1, 1] at 32x32 (bilinear, no antialias); a grey image (one channel)
    is repeated to three, as the datasets store grey (digits)."""
    x = images.float() / 127.5 - 1
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != RESOLUTION or x.shape[-2] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    return x




def expected_hashes() -> dict[str, str]:
    path = ASSETS / "SHA256SUMS"
    if not path.is_file():
        return {}
    return {line.split()[1]: line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def _load(module: nn.Module, file: str, weights: str | None, allow_unverified: bool) -> tuple[str, bool]:
    path = Path(weights) if weights else ASSETS / file
    if not path.is_file():
        raise MissingWeightsError(f"{path} not found: the embedded detectors ship with diffbench; "
                                  "regenerate them with 'python scripts/train_detectors.py'")
    digest = sha256_of(path, path.stat().st_mtime_ns)
    verified = expected_hashes().get(file) == digest
    if not verified and not allow_unverified:
        raise MissingWeightsError(f"{path} has sha256 {digest}, not the one in {ASSETS / 'SHA256SUMS'}; restore it "
                                  "or pass --allow-unverified-weights to mark every result unverified")
    try:
        module.load_state_dict(load_file(str(path)), strict=True)
    except Exception as e:  # noqa: BLE001 - not safetensors, or other tensors: the same fix for the user
        raise BadInputError(f"{path}: not this detector's weights ({' '.join(str(e).split())[:120]}); give the "
                            f"file scripts/train_detectors.py writes, or omit --weights") from None
    return digest, verified


class EmbeddedDetector:
    mode = "embedded"

    def __init__(self, name: str, weights: str | None, allow_unverified: bool, device: str) -> None:
        spec = DETECTOR_SPECS[name]
        self.name, self.device = name, device
        net = FeatureNet(spec["classes"])
        self.weights_sha256, self.verified = _load(net, spec["file"], weights, allow_unverified)
        self.encoder = net.encoder.eval().to(device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return {"pool": self.encoder(preprocess(images).to(self.device)).double().cpu().numpy()}


def build_detector(name: str) -> Callable[..., EmbeddedDetector]:
    def build(mode: str = "embedded", weights: str | None = None, allow_unverified: bool = False,
              device: str = "cpu") -> EmbeddedDetector:
        return EmbeddedDetector(name, weights, allow_unverified, device)

    return build


def load_shapes_clip(weights: str | None = None, allow_unverified: bool = False) -> tuple[ShapesCLIP, str, bool]:
    model = ShapesCLIP()
    digest, verified = _load(model, CLIP_FILE, weights, allow_unverified)
    return model.eval(), digest, verified
