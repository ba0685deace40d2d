"""Latents computed once: a dataset encoded by a local ``AutoencoderKL`` (DiT's ``sd-vae-ft-ema``), both
horizontal flips of every image, so that training on them keeps DiT's augmentation.

Written as safetensors shards (``shard-00000.safetensors``, ``latents`` of shape (n, 2, C, H, W): the image
and its mirror; ``labels``), each with the autoencoder's sha256, its scaling factor and the source dataset's
hash in its metadata, and a ``latents.json`` manifest written last (its presence means complete). Shard j is
encoded by rank j mod world under torchrun; a shard is written whole or not at all, so an encoding killed
mid-way and run again skips the shards it has and writes the same bytes for the rest.

A latent is the posterior's mean times the scaling factor: deterministic, so that training on stored latents
equals training with the encoder in the loop (DiT's ``train.py`` draws a posterior sample at every step
instead; the SD-VAE posterior's spread is what that adds, and it is not modelled here).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from diffbench.core import distributed
from diffbench.core.errors import BadInputError
from diffbench.core.files import content_sha256, write_bytes_atomic, write_text_atomic
from diffbench.core.log import logger
from diffbench.diffusion.sources import Batch, DataSource, FolderSource
from diffbench.models.pretrained import from_local

MANIFEST = "latents.json"
FORMAT = "diffbench-latents/1"


class Encoder:
    """A local diffusers AutoencoderKL: uint8 images -> scaled latent means."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from diffusers import AutoencoderKL

        self.path = str(path)
        self.ae = from_local(AutoencoderKL, path, "a diffusers AutoencoderKL").to(device).eval()
        self.device = device
        self.scaling_factor = float(self.ae.config.scaling_factor)
        self.sha256 = content_sha256(path)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float().div(127.5).sub(1)
        return (self.ae.encode(x).latent_dist.mean * self.scaling_factor).float().cpu()


DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def write_shard(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """A safetensors file written byte for byte the same for the same tensors and metadata, atomically. Written
    here rather than by ``safetensors.torch.save``, whose header comes from a Rust hash map: its key order, and so
    the file's bytes, change from one process to the next (a resumed encoding could not be checked by its bytes)."""
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.numpy().tobytes()  # little-endian on every platform torch runs on
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    write_bytes_atomic(path, struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _shard_name(j: int) -> str:
    return f"shard-{j:05d}.safetensors"


def _shard_ok(path: Path, meta: dict[str, str]) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            got = f.metadata() or {}
    except Exception:  # noqa: BLE001 - a damaged shard is written again
        return False
    return all(got.get(k) == v for k, v in meta.items())


def encode_dataset(source: DataSource, encoder: Encoder, out: str | Path, source_sha256: str,
                   shard_size: int = 1024, batch_size: int = 64) -> dict[str, Any]:
    """Encode ``source`` into ``out`` (this rank's shards; rank 0 writes the manifest once all are there)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = distributed.current()
    n = len(source)
    shards = (n + shard_size - 1) // shard_size
    common = {"format": FORMAT, "autoencoder_sha256": encoder.sha256, "scaling_factor": repr(encoder.scaling_factor),
              "source_sha256": source_sha256, "shard_size": str(shard_size)}
    written = skipped = 0
    for j in range(shards):
        if j % world.size != world.rank:
            continue
        path = out / _shard_name(j)
        first, end = j * shard_size, min(n, (j + 1) * shard_size)
        meta = {**common, "first": str(first), "count": str(end - first)}
        if path.exists() and _shard_ok(path, meta):
            skipped += 1
            continue
        lat, labels = [], []
        for b0 in range(first, end, batch_size):
            idx = list(range(b0, min(end, b0 + batch_size)))
            plain, mirror = source.fetch(idx), source.fetch(idx, [True] * len(idx))
            lat.append(torch.stack([encoder.encode(plain.x), encoder.encode(mirror.x)], dim=1))
            labels.append(plain.conds if plain.conds is not None and plain.conds.ndim == 1
                          else torch.zeros(len(idx), dtype=torch.long))
        write_shard(path, {"latents": torch.cat(lat).contiguous(), "labels": torch.cat(labels).long()}, meta)
        written += 1
        logger.info(f"latents: shard {j + 1} of {shards} written ({end - first} images)")
    distributed.barrier()
    manifest = {**common, "count": n, "shards": [_shard_name(j) for j in range(shards)],
                "shape": list(encoder_shape(out, shards)), "cond": source.cond, "classes": source.classes,
                "source": getattr(source, "name", ""), "autoencoder": encoder.path,
                "resolution": source.shape[-1]}
    if world.is_writer:
        write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    return {"shards": shards, "written": written, "skipped": skipped, "manifest": manifest}


def encoder_shape(out: Path, shards: int) -> tuple[int, ...]:
    with safe_open(str(out / _shard_name(0)), "pt") as f:
        return tuple(f.get_slice("latents").get_shape()[2:])


def manifest_sha256(folder: str | Path) -> str:
    """The identity of a latents folder: its manifest (which names the autoencoder's and the source's hashes)."""
    return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()


class LatentSource:
    """Latents written by :func:`encode_dataset`: item i is its image's latent, or its mirror's when flipped.
    Scored by decoding samples with the same autoencoder against the source dataset's images."""

    latent = True
    flippable = True

    def __init__(self, folder: str | Path, detector: str = "inception-v3") -> None:
        self.folder = Path(folder)
        try:
            self.manifest = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise BadInputError(f"{self.folder / MANIFEST}: unreadable ({e}); run 'diffbench latents' again") from None
        if self.manifest.get("format") != FORMAT:
            raise BadInputError(f"{self.folder}: not latents written by this diffbench (format "
                                f"{self.manifest.get('format')!r}); run 'diffbench latents' again")
        m = self.manifest
        self.name, self.detector = str(self.folder), detector
        self.cond = "class" if m["cond"] == "class" else "none"
        self.classes = int(m["classes"])
        self.scaling_factor = float(m["scaling_factor"])
        self.autoencoder = str(m["autoencoder"])
        self._shape = tuple(m["shape"])
        self._size = int(m["shard_size"])
        self._files: dict[int, Any] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def _file(self, j: int) -> Any:
        if j not in self._files:  # opened per process (DataLoader workers open their own)
            path = self.folder / self.manifest["shards"][j]
            try:
                self._files[j] = safe_open(str(path), "pt")
            except Exception as e:  # noqa: BLE001
                raise BadInputError(f"{path}: unreadable latents shard ({e}); run 'diffbench latents' again") from None
        return self._files[j]

    def fetch(self, indices: Sequence[int], flips: Sequence[bool] | None = None) -> Batch:
        flips = list(flips) if flips is not None else [False] * len(indices)
        xs, ys = [], []
        for i, f in zip(indices, flips, strict=True):
            j, k = divmod(int(i), self._size)
            h = self._file(j)
            xs.append(h.get_slice("latents")[k:k + 1, int(bool(f))][0])
            ys.append(h.get_slice("labels")[k:k + 1])
        labels = torch.cat(ys)
        return Batch(torch.stack(xs), labels if self.cond == "class" else None)

    def reference(self, n: int | None = None) -> Batch:
        """The source dataset's images (the latents' own images), to score decoded samples against."""
        source = self.manifest.get("source", "")
        if not source or not Path(source).is_dir():
            raise BadInputError(f"{self.folder}: scoring needs the images the latents came from ({source or '?'}), "
                                "not found here")
        return FolderSource(source, int(self.manifest["resolution"])).reference(n)

    def identity(self) -> dict[str, Any]:
        return {"kind": "latents", "sha256": manifest_sha256(self.folder)}

    def __getstate__(self) -> dict[str, Any]:  # open shard files stay in their process
        return {**self.__dict__, "_files": {}}


class EncodedSource:
    """An image source encoded on the fly by an autoencoder (what ``diffbench latents`` saves a training
    from doing at every step); the flips are applied to the image before encoding, as on disk."""

    latent = True

    def __init__(self, source: DataSource, encoder: Encoder) -> None:
        self.source, self.encoder = source, encoder
        self.flippable = source.flippable
        self.cond, self.classes, self.name = source.cond, source.classes, source.name

    def __len__(self) -> int:
        return len(self.source)

    def fetch(self, indices: Sequence[int], flips: Sequence[bool] | None = None) -> Batch:
        b = self.source.fetch(indices, flips)
        return Batch(self.encoder.encode(b.x), b.conds, b.captions)
