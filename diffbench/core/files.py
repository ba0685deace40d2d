"""Writing a file so that a reader never sees half of it: a temporary name beside it, then a rename."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from diffbench.core.errors import BadInputError


def content_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a folder's files (relative paths and contents, sorted): a pipeline directory's or a
    reference folder's identity. Each file's hash is remembered per size and mtime (``sha256_file``)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all (a kill or a full disk leaves the previous file)."""
    return write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, fsynced, then renamed."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (``savefig``, ``np.savez``);
    fsynced and renamed over ``path`` only when the block ends without an error."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.{os.getpid()}.tmp{p.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # on disk before the rename, so a crash leaves the old file or the new one
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except OSError as e:  # a failed write() names no file: name the one that was being written
        raise OSError(e.errno, e.strerror, str(p)) from None
    finally:
        tmp.unlink(missing_ok=True)


def output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create (or reuse) a directory for outputs *before* any work is done, or fail in one line naming it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BadInputError(f"{what} {p} is a file, not a directory; choose a directory path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"{what} {p}: cannot create the directory ({e.strerror}); choose a writable path") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise BadInputError(f"{what} {p}: not writable; choose a writable directory")
    return p


def output_file(path: str | os.PathLike[str], suffix: str, what: str = "--out") -> Path:
    """An output file path whose folder exists (created) and whose name ends in ``suffix``, checked before work."""
    p = Path(path)
    if p.suffix != suffix:
        raise BadInputError(f"{what} {p}: the file name must end in {suffix} (e.g. {p.with_suffix(suffix).name})")
    if p.is_dir():
        raise BadInputError(f"{what} {p} is a directory; give a file path ending in {suffix}")
    output_dir(p.parent if str(p.parent) else ".", f"{what}'s folder")
    return p


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks; remembered while its size and mtime stay the same."""
    st = os.stat(path)
    return _sha256(os.fspath(path), st.st_size, st.st_mtime_ns)
