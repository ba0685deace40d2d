"""The data-source contract: what a case trains on and is scored against, whatever it is on disk.

A source says how many items it has, what they are conditioned on (``class`` with its class count,
``text`` with captions, or ``none``), what one item is (its shape, and whether it is a uint8 image or a
float latent), fetches items by index (flipped horizontally where the training loop's draw says so and
the source allows it), gives the images a model is scored against and the detector that scores them,
and names itself by content (its identity, which enters the case id).

Sources: the embedded ``digits`` and ``shapes`` (in memory, never flipped: a mirrored digit is not a digit,
and a shape's caption names its position), an ADM-style ``.npz``, a class-folder tree or a captioned folder
(``diffusion/folders.py``), and latents written by ``diffbench latents`` (``diffusion/latents.py``).
``diffusion/resolve.py`` is the one place a dataset's name or path is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from diffbench.core.errors import BadInputError
from diffbench.core.log import logger
from diffbench.diffusion import folders
from diffbench.metrics.captions import tokenize

REFERENCE_MAX = 10_000  # images a folder source is scored against (the first ones, in its fixed order)


@dataclass
class Batch:
    x: torch.Tensor  # uint8 images (N, C, H, W), or float latents
    conds: torch.Tensor | None  # class labels (N,) or caption token ids (N, T); None for cond "none"
    captions: list[str] | None = None
    skipped: list[str] = field(default_factory=list)  # undecodable files replaced in this batch (skip_bad)


class DataSource(Protocol):
    name: str  # for messages and records: digits, shapes, or the path
    cond: str  # class, text or none
    classes: int  # class count (class sources), else 0
    latent: bool  # items are float latents (scored through an autoencoder), not uint8 images
    flippable: bool  # horizontal flips are a valid augmentation
    detector: str  # the detector that scores samples against it by default
    autoencoder: str  # latent sources: the autoencoder that decodes samples ('' for images)

    @property
    def shape(self) -> tuple[int, int, int]: ...  # one item, as fetched

    def __len__(self) -> int: ...
    def fetch(self, indices: Sequence[int], flips: Sequence[bool] | None = None) -> Batch: ...
    def reference(self, n: int | None = None) -> Batch: ...
    def identity(self) -> dict[str, Any]: ...


@dataclass
class TensorSource:
    """Items held in memory (the embedded datasets, an ``.npz``)."""

    autoencoder = ""

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    cond: str
    classes: int
    detector: str
    captions: list[str] | None = None
    flippable: bool = False
    ident: dict[str, Any] = field(default_factory=dict)
    latent: bool = False

    def __post_init__(self) -> None:
        self.tokens = tokenize(self.captions) if self.cond == "text" and self.captions is not None else None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def fetch(self, indices: Sequence[int], flips: Sequence[bool] | None = None) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx]
        if flips is not None and self.flippable and any(flips):
            f = torch.as_tensor(flips, dtype=torch.bool)
            x[f] = x[f].flip(-1)
        conds = self.tokens[idx] if self.tokens is not None else \
            self.labels[idx] if self.labels is not None and self.cond == "class" else None
        caps = [self.captions[i] for i in idx.tolist()] if self.captions is not None else None
        return Batch(x, conds, caps)

    def reference(self, n: int | None = None) -> Batch:
        return self.fetch(range(len(self) if n is None else min(n, len(self))))

    def identity(self) -> dict[str, Any]:
        return self.ident


class FolderSource:
    """A class-folder tree or a captioned folder, decoded at ``resolution`` on fetch (in DataLoader workers
    when the training loop has them). With ``skip_bad``, an image that cannot be decoded is replaced by the
    next one that can and counted (``bad``); without, it is a one-line error naming the file."""

    latent = False
    flippable = True
    autoencoder = ""

    def __init__(self, root: str | Path, resolution: int, skip_bad: bool = False, detector: str = "inception-v3"):
        self.listing = folders.list_folder(root, skip_bad)
        self.root, self.resolution, self.skip_bad, self.detector = Path(root), resolution, skip_bad, detector
        self.name = str(root)
        self.cond = "text" if self.listing.captions is not None else "class"
        self.classes = len(self.listing.class_names) if self.cond == "class" else 0
        self._shape = (3, resolution, resolution)
        self.tokens = tokenize(self.listing.captions) if self.listing.captions is not None else None
        self.labels = torch.tensor(self.listing.labels, dtype=torch.long)
        self.bad: list[str] = []
        for why in self.listing.skipped:
            logger.warning(f"skipped: {why}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def __len__(self) -> int:
        return len(self.listing.files)

    def _decode(self, i: int, flip: bool, skipped: list[str]) -> np.ndarray:
        for k in range(len(self)):
            j = (i + k) % len(self)
            try:
                return folders.decode(self.root / self.listing.files[j], self.resolution, flip)
            except BadInputError as e:
                if not self.skip_bad:
                    raise
                skipped.append(self.listing.files[j])
                if str(e) not in self.bad:
                    self.bad.append(str(e))
                    logger.warning(f"skipped: {e}")
        raise BadInputError(f"{self.root}: not one image could be decoded")

    def fetch(self, indices: Sequence[int], flips: Sequence[bool] | None = None) -> Batch:
        flips = list(flips) if flips is not None else [False] * len(indices)
        skipped: list[str] = []
        arrays = [self._decode(int(i), bool(f), skipped) for i, f in zip(indices, flips, strict=True)]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        conds = self.tokens[idx] if self.tokens is not None else self.labels[idx]
        caps = [self.listing.captions[i] for i in idx.tolist()] if self.listing.captions is not None else None
        return Batch(x, conds, caps, skipped)

    def reference(self, n: int | None = None) -> Batch:
        return self.fetch(range(min(len(self), n or REFERENCE_MAX)))

    def identity(self) -> dict[str, Any]:
        return {"kind": "folder", "sha256": self.listing.sha256, "files": len(self), "resolution": self.resolution}


class Unconditioned:
    """A source's items without their conditions (an unconditional model trained on a labelled dataset)."""

    def __init__(self, source: DataSource) -> None:
        self.source = source
        self.flippable = source.flippable

    def __len__(self) -> int:
        return len(self.source)

    def fetch(self, indices: Sequence[int], flips: Sequence[bool] | None = None) -> Batch:
        return Batch(self.source.fetch(indices, flips).x, None)
