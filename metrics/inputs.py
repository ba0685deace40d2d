"""Image inputs for the quality metrics, validated and streamed as uint8 NCHW RGB batches.

Sources: a folder of images, an ADM-style ``.npz`` batch (``arr_0``, uint8 NHWC), a tensor
(uint8, or float with an explicit value range), or an iterator of such tensors (a sampler).
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffbench.core.errors import BadInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BadInputError(f"{folder}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
                            "give a folder of image files, an .npz batch or a statistics file")
    return files


def _folder_batches(folder: Path, batch_size: int, mine: Callable[[int], bool] = lambda j: True
                    ) -> Iterator[tuple[int, torch.Tensor]]:
    files = list_images(folder)
    size = None
    for j, i in enumerate(range(0, len(files), batch_size)):
        if not mine(j):
            continue
        arrays = []
        for f in files[i:i + batch_size]:
            try:
                with Image.open(f) as im:
                    a = rgb8(im, f)
            except BadInputError:
                raise
            except Exception as e:
                raise BadInputError(f"{f}: unreadable image ({str(e)[:60]})") from None
            if size is None:
                size = a.shape
            elif a.shape != size:
                raise BadInputError(f"{f}: size {a.shape[1]}x{a.shape[0]} differs from the first image's "
                                    f"{size[1]}x{size[0]}; resize the images to one size first")
            arrays.append(a)
        yield j, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def rgb8(im: object, path: Path) -> np.ndarray:
    """HWC uint8 RGB of a PIL image. 16-bit greyscale (PNG/TIFF) is scaled by 255/65535, not clipped:
    PIL's ``convert("RGB")`` clips it at 255, which saturates almost every pixel of a 16-bit image."""
    assert isinstance(im, Image.Image)
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise BadInputError(f"{path}: {im.mode} pixel values span {a.min()}..{a.max()}, beyond 16 bits; "
                                "save the images as 8- or 16-bit PNG")
        g = np.rint(a * (255 / 65535)).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if im.mode == "F":
        raise BadInputError(f"{path}: floating-point pixels (mode F) have no fixed range; save the images as 8- or "
                            "16-bit PNG")
    return np.asarray(im.convert("RGB"))


class LazyBatches:
    """Images made batch by batch where they are read: batch j is ``make(j * batch_size, end)``, called only by the
    rank that owns it under torchrun (j mod world size), so that no rank holds, or receives, another's images
    (a case's samples, scored over its ranks)."""

    def __init__(self, make: Callable[[int, int], torch.Tensor], n: int, batch_size: int) -> None:
        self.make, self.n, self.batch_size = make, n, batch_size
        self.seconds = 0.0  # spent making this rank's batches

    def __len__(self) -> int:
        return self.n

    @property
    def batches(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def make_batch(self, j: int) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            return self.make(j * self.batch_size, min(self.n, (j + 1) * self.batch_size))
        finally:
            self.seconds += time.perf_counter() - t0


def count(source: Any) -> int | None:
    """How many images ``source`` holds, when that is cheap to know (for a progress bar's time left)."""
    if isinstance(source, LazyBatches):
        return len(source)
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.is_dir():
                return len(list_images(path))
            if path.suffix == ".npz" and path.is_file():
                with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape = read(f)[0]  # the header only, not the pixels
                    return int(shape[0]) if shape else None
            return None
        if isinstance(source, (np.ndarray, torch.Tensor)):
            return len(source)
    except (OSError, KeyError, ValueError, BadInputError, zipfile.BadZipFile, AttributeError):
        return None
    return None


def load_npz_images(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as f:
            if "arr_0" not in f.files:
                raise BadInputError(f"{path}: an image batch needs arr_0 (uint8 NHWC, the ADM format); "
                                    f"found {sorted(f.files)}")
            arr = f["arr_0"]
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(f"{path}: not a readable .npz file ({str(e)[:80]})") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise BadInputError(f"{path}: arr_0 must be uint8 NHWC with 1 or 3 channels, got {arr.dtype} {arr.shape}")
    if min(arr.shape[:3]) < 1:
        raise BadInputError(f"{path}: arr_0 has shape {arr.shape}: no images, or images of height or width 0")
    return arr


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """uint8 NCHW RGB from uint8, or from float with an explicit range such as (-1, 1) or (0, 1)."""
    if images.ndim != 4:
        raise BadInputError(f"images must be NCHW, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise BadInputError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise BadInputError(f"images must be uint8 or float, got {images.dtype}")
    if value_range is None:
        raise BadInputError("float images need an explicit value range, e.g. (-1, 1) or (0, 1)")
    lo, hi = value_range
    vmin, vmax = float(images.min()), float(images.max())
    tol = 1e-3 * (hi - lo)
    if vmin < lo - tol or vmax > hi + tol:
        raise BadInputError(f"float images span [{vmin:.3g}, {vmax:.3g}], outside their declared range [{lo}, {hi}]")
    x = (images.float() - lo) / (hi - lo) * 255
    return x.round().clamp(0, 255).to(torch.uint8)


def batches(source: str | Path | torch.Tensor | np.ndarray | Iterable[torch.Tensor], batch_size: int = 64,
            value_range: tuple[float, float] | None = None) -> Iterator[torch.Tensor]:
    """Stream uint8 NCHW batches from any supported source."""
    for _, batch in indexed_batches(source, batch_size, value_range):
        yield batch


def indexed_batches(source: str | Path | torch.Tensor | np.ndarray | Iterable[torch.Tensor], batch_size: int = 64,
                    value_range: tuple[float, float] | None = None,
                    mine: Callable[[int], bool] = lambda j: True) -> Iterator[tuple[int, torch.Tensor]]:
    """(global batch index j, uint8 NCHW batch) for the batches ``mine(j)`` selects (a torchrun rank's share;
    the images of other batches are not read). Batch j holds images j * batch_size onwards; an iterable of
    batches is taken as it comes (batch j is its j-th)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            yield from _folder_batches(path, batch_size, mine)
            return
        if path.suffix == ".npz" and path.is_file():
            arr = load_npz_images(path)
            for j, i in enumerate(range(0, len(arr), batch_size)):
                if mine(j):
                    yield j, to_uint8(torch.from_numpy(arr[i:i + batch_size]).permute(0, 3, 1, 2))
            return
        raise BadInputError(f"{path}: not a folder of images or an .npz file")
    if isinstance(source, LazyBatches):  # its own batches: only this rank's are made
        for j in range(source.batches):
            if mine(j):
                yield j, to_uint8(source.make_batch(j), value_range)
        return
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    if isinstance(source, torch.Tensor):
        for j, i in enumerate(range(0, len(source), batch_size)):
            if mine(j):
                yield j, to_uint8(source[i:i + batch_size], value_range)
        return
    for j, b in enumerate(source):
        if mine(j):
            yield j, to_uint8(b, value_range)
