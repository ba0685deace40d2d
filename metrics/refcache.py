"""A cache of reference features, so that a suite of 20 cases scored against one reference extracts its
features once.

An entry is keyed by what determines the features: the reference's *content* (a hash of the pixels of
a tensor, of the bytes of an ``.npz``, of every file of a folder with its relative path), the
images' resolution, and the detector (name, mode, sha256 of its weights). A changed reference file
therefore has another key and is never served stale. An entry holds the running sums (count, sum,
sum of outer products, compensated) and, when they were kept, the raw pool features and logits
(KID, precision/recall and IS need them), exactly as the detector returned them.

The cache lives in ``$DIFFBENCH_CACHE/reference-stats`` (default ``~/.cache/diffbench``);
``DIFFBENCH_CACHE=off`` turns it off. ``diffbench stats`` fills it, ``diffbench cache list|clear``
shows and empties it. Entries are written atomically, so concurrent cases computing one entry
leave one whole file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffbench.core.distributed import current
from diffbench.core.files import atomic_path, sha256_file
from diffbench.core.log import logger
from diffbench.metrics.detectors import describe
from diffbench.metrics.inputs import list_images
from diffbench.metrics.quality import Side, extract
from diffbench.metrics.stats import FeatureStats

SUBDIR = "reference-stats"
ENV = "DIFFBENCH_CACHE"


# what reading a damaged .npz raises: truncated (BadZipFile, EOFError), wrong shapes or types (ValueError,
# TypeError: int() of a 2-D count), a missing array (KeyError), a metadata that is not an object (AttributeError)
DAMAGED = (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile)


def cache_dir() -> Path | None:
    """Where entries live, or None when the cache is turned off."""
    raw = os.environ.get(ENV, "")
    if raw.strip().lower() in ("off", "0", "no", "false"):
        return None
    base = Path(raw).expanduser() if raw else Path.home() / ".cache" / "diffbench"
    return base / SUBDIR


def content_hash(source: Any) -> tuple[str, str]:
    """(sha256 of what the images are, a short description of the source)."""
    h = hashlib.sha256()
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    if isinstance(source, torch.Tensor):
        t = source.detach().cpu().contiguous()
        h.update(json.dumps([list(t.shape), str(t.dtype)]).encode())
        h.update(t.numpy().tobytes())
        return h.hexdigest(), f"tensor {tuple(t.shape)} {t.dtype}"
    path = Path(source)
    if path.is_dir():
        files = list_images(path)
        for f in files:
            h.update(str(f.relative_to(path)).encode() + b"\0")
            h.update(sha256_file(f).encode())
        return h.hexdigest(), f"folder {path} ({len(files)} images)"
    return sha256_file(path), f"file {path}"


def key(content: str, resolution: tuple[int, ...] | None, identity: dict[str, Any]) -> str:
    blob = json.dumps({"content": content, "resolution": list(resolution or []),
                       **{k: str(identity.get(k)) for k in ("detector", "mode", "weights_sha256")}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Lookup:
    side: Any  # metrics.quality.Side
    hit: bool
    key: str | None


def cached_extract(source: Any, detector: Any, keep_features: bool = True, batch_size: int = 64,
                   label: str | None = None, progress: bool = False) -> Lookup:
    """The reference's features from the cache, or extracted and stored there."""
    folder = cache_dir()
    if folder is None or current().is_distributed:  # under torchrun each rank sees a share: extract as usual
        return Lookup(extract(source, detector, keep_features, batch_size, label=label, progress=progress), False,
                      None)
    content, what = content_hash(source)
    resolution = tuple(source.shape[1:]) if isinstance(source, (torch.Tensor, np.ndarray)) else None
    identity = describe(detector)
    k = key(content, resolution, identity)
    path = folder / f"{k}.npz"
    count = len(source) if isinstance(source, (torch.Tensor, np.ndarray)) else \
        len(list_images(Path(source))) if Path(source).is_dir() else None
    side = _load(path, keep_features, label or what, identity)
    if side is not None:
        wrong = verify(path, side, k, content, count)
        if not wrong:
            return Lookup(side, True, k)
        logger.warning(f"reference cache entry {path.name} ignored and extracted again: {wrong}")
    side = extract(source, detector, keep_features, batch_size, label=label, progress=progress)
    _save(path, side, {**{n: str(v) for n, v in identity.items()}, "source": what, "content_sha256": content,
                       "resolution": "x".join(map(str, resolution or ())), "label": label or what})
    return Lookup(side, False, k)


def _save(path: Path, side: Any, meta: dict[str, str]) -> None:
    s = side.stats
    arrays: dict[str, Any] = {"count": np.array(s.count), "sum": s.sum, "sum_lo": s.sum_lo, "sum_outer": s.sum_outer,
                              "sum_outer_lo": s.sum_outer_lo, "meta": np.array(json.dumps(meta))}
    if side.pool is not None:
        arrays["pool"] = side.pool
    if side.logits is not None:
        arrays["logits"] = side.logits
    if side.spatial is not None:
        t = side.spatial
        arrays.update(spatial_count=np.array(t.count), spatial_sum=t.sum, spatial_sum_lo=t.sum_lo,
                      spatial_sum_outer=t.sum_outer, spatial_sum_outer_lo=t.sum_outer_lo)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError:  # a cache that cannot be written costs time, never a result
        pass


def _load(path: Path, keep_features: bool, label: str, identity: dict[str, Any]) -> Any | None:
    """The entry as a Side, or None (absent, unreadable, or without the raw features the caller needs)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if keep_features and "pool" not in f.files:
                return None
            stats = _stats(f, "")
            spatial = _stats(f, "spatial_") if "spatial_sum" in f.files else None
            pool = np.array(f["pool"]) if "pool" in f.files else None
            logits = np.array(f["logits"]) if "logits" in f.files else None
    except DAMAGED:
        return None
    if stats is None or (pool is not None and (pool.ndim != 2 or len(pool) != stats.count)):
        return None
    arrays = [stats.sum, stats.sum_outer, pool, logits] + ([spatial.sum, spatial.sum_outer] if spatial else [])
    if not all(bool(np.isfinite(a).all()) for a in arrays if a is not None):  # a damaged entry: extract again
        return None
    return Side(label, stats, spatial, pool, logits, dict(identity))


def verify(path: Path, side: Any, k: str, content: str, count: int | None) -> str:
    """Why the entry at ``path`` is not the one its key names, or "" when it is: the key its own metadata gives,
    the reference's content, the number of images, features that add up to its sums, and a covariance that is
    positive semi-definite (a wrong but well-formed entry gave FID 0.0, a negative distance clamped)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
    except (*DAMAGED, RecursionError):
        return "its metadata is unreadable"
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return "its metadata is not an object of strings"
    res = tuple(int(x) for x in meta.get("resolution", "").split("x") if x.isdigit())
    if meta.get("content_sha256") != content or key(content, res or None, meta) != k:
        return "its metadata names another reference or detector than its key"
    s = side.stats
    if s.count < 2 or (count is not None and s.count != count):
        return f"it holds {s.count} images, the reference {count}"
    if side.pool is not None and not np.allclose(side.pool.sum(0), s.total, rtol=1e-6, atol=1e-6 * len(side.pool)):
        return "its features do not add up to its sums"
    mu = s.total / s.count
    sigma = (s.total_outer - s.count * np.outer(mu, mu)) / (s.count - 1)
    scale = max(float(np.abs(np.diag(sigma)).max()), 1e-12)
    try:  # PSD up to round-off: a Cholesky factor of sigma + a tiny ridge exists
        np.linalg.cholesky((sigma + sigma.T) / 2 + 1e-6 * scale * np.eye(len(mu)))
    except np.linalg.LinAlgError:
        return "its covariance is not positive semi-definite"
    return ""


def _stats(f: Any, prefix: str) -> FeatureStats | None:
    total, outer = np.array(f[prefix + "sum"]), np.array(f[prefix + "sum_outer"])
    if total.ndim != 1 or outer.shape != (len(total), len(total)):
        return None
    s = FeatureStats(len(total), int(f[prefix + "count"]), total, outer,
                     sum_lo=np.array(f[prefix + "sum_lo"]), sum_outer_lo=np.array(f[prefix + "sum_outer_lo"]))
    return s


ENTRY = re.compile(r"[0-9a-f]{32}\.npz")  # what diffbench writes here: its key, as a file name


def _entries(folder: Path | None) -> list[Path]:
    """The files of the cache that diffbench wrote: named by a key, regular files, not links; nothing when the
    cache folder is itself a link (it would lead out of the cache)."""
    if folder is None or folder.is_symlink() or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if ENTRY.fullmatch(p.name) and not p.is_symlink() and p.is_file())


def _read_entry(p: Path) -> tuple[dict[str, Any], int, bool, str]:
    """(metadata, images, raw features kept, "" or why the entry is damaged) of one entry, never raising."""
    try:
        with np.load(p, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            count = np.asarray(f["count"])
            kept = "pool" in f.files
    except (*DAMAGED, RecursionError) as e:
        return {}, 0, False, f"damaged: unreadable ({type(e).__name__})"
    if not isinstance(meta, dict):
        return {}, 0, kept, "damaged: metadata is not an object"
    if count.ndim != 0 or not np.issubdtype(count.dtype, np.integer) or int(count) < 0:
        return meta, 0, kept, "damaged: its image count is not a whole number"
    return meta, int(count), kept, ""


def entries() -> list[dict[str, Any]]:
    """One row per entry: key, source, detector, mode, images, raw features kept, status (``ok``, or why it is
    damaged: a damaged entry is ignored and extracted again by the commands that read it), size, written."""
    rows = []
    for p in _entries(cache_dir()):
        meta, n, kept, damaged = _read_entry(p)
        rows.append({"key": p.stem, "source": str(meta.get("source", "?")), "detector": str(meta.get("detector", "?")),
                     "mode": str(meta.get("mode", "?")), "images": n, "features": kept, "status": damaged or "ok",
                     "MiB": round(p.stat().st_size / 2**20, 2),
                     "written": datetime.datetime.fromtimestamp(p.stat().st_mtime).isoformat(timespec="seconds")})
    return rows


def clear() -> int:
    """Remove the entries diffbench wrote (a user's own files in the folder, and links, are left alone)."""
    n = 0
    for p in _entries(cache_dir()):
        p.unlink(missing_ok=True)
        n += 1
    return n
