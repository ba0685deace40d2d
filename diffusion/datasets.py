"""Embedded datasets that need no download: scikit-learn's handwritten digits and procedural shapes.

Both return uint8 NCHW RGB images at any resolution; shapes also returns captions and
attribute labels. Image k of the shapes dataset depends only on (seed, k).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffbench.core.errors import BadInputError
from diffbench.metrics.captions import COLOURS, POSITIONS, SHAPES, SIZES, caption
from diffbench.metrics.inputs import batches


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,) class labels, or (N, K) attribute labels
    captions: list[str] | None = None


def digits(resolution: int = 32) -> ImageSet:
    """The 1,797 8x8 handwritten digits of scikit-learn (UCI), upsampled bilinearly, white on black."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return ImageSet(x, torch.from_numpy(d.target.astype(np.int64)))


def _draw(rng: np.random.Generator, res: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    s, c, p, z = (int(rng.integers(len(v))) for v in (SHAPES, COLOURS, POSITIONS, SIZES))
    img = np.full((res, res, 3), rng.integers(0, 40), dtype=np.uint8)  # dark, slightly varying background
    radius = res * (0.12 if z == 0 else 0.24) * rng.uniform(0.9, 1.1)
    cx, cy = {"top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
              "bottom right": (0.72, 0.72), "center": (0.5, 0.5)}[POSITIONS[p]]
    cx, cy = (cx + rng.uniform(-0.04, 0.04)) * res, (cy + rng.uniform(-0.04, 0.04)) * res
    yy, xx = np.mgrid[0:res, 0:res] + 0.5
    if SHAPES[s] == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    elif SHAPES[s] == "square":
        mask = (abs(xx - cx) <= radius * 0.85) & (abs(yy - cy) <= radius * 0.85)
    else:  # upward triangle
        mask = (yy <= cy + radius * 0.8) & (yy >= cy - radius) & (abs(xx - cx) <= (yy - (cy - radius)) * 0.6)
    colour = np.array(list(COLOURS.values())[c], dtype=np.float64) * rng.uniform(0.85, 1.0)
    img[mask] = colour.astype(np.uint8)
    return img, (s, c, p, z)


def shapes(n: int, resolution: int = 32, seed: int = 0, start: int = 0) -> ImageSet:
    """n procedural images (k = start .. start+n-1), each a coloured shape with its caption."""
    imgs, attrs, caps = [], [], []
    for k in range(start, start + n):
        rng = np.random.default_rng([seed, k])
        img, a = _draw(rng, resolution)
        imgs.append(img)
        attrs.append(a)
        caps.append(caption(SHAPES[a[0]], list(COLOURS)[a[1]], POSITIONS[a[2]], SIZES[a[3]]))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(x, torch.tensor(attrs, dtype=torch.int64), caps)


def from_npz(path: str, resolution: int) -> ImageSet:
    """Images of an ADM-style ``.npz`` (``arr_0`` uint8 NHWC images, optional ``arr_1`` labels), resized to
    ``resolution``. (Folders are ``diffusion/folders.py``'s, through the sources.)"""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p}: no such .npz file; give --dataset digits, shapes, a folder or an .npz")
    npz_labels = None
    with np.load(p, allow_pickle=False) as z:  # labels checked before any image is resized (or trained on)
        if "arr_1" in z.files:
            npz_labels = z["arr_1"]
    if npz_labels is not None:
        if npz_labels.dtype.kind not in "iu" or npz_labels.ndim != 1:
            raise BadInputError(f"{p}: arr_1 (class labels) must be a 1-d array of integers, got "
                                f"{npz_labels.dtype} {npz_labels.shape}")
        if len(npz_labels) and npz_labels.min() < 0:
            raise BadInputError(f"{p}: arr_1 holds negative class label(s) ({int(npz_labels.min())}); "
                                "labels are 0..classes-1")
    imgs = [F.interpolate(b.float(), size=(resolution, resolution), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8) for b in batches(p, 256)]
    images = torch.cat(imgs)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.zeros(len(images), dtype=torch.int64) if npz_labels is None else \
        torch.from_numpy(npz_labels.astype(np.int64))
    if len(labels) != len(images):
        raise BadInputError(f"{p}: {len(images)} images but {len(labels)} labels in arr_1; give one label per image")
    return ImageSet(images, labels)
