"""Image datasets on the user's disk: what files a folder holds, their identity, and how one is decoded.

Two layouts, both the conventions the field's training scripts read:

- a **class-folder tree** (ImageNet's ``train/n01440764/*.JPEG``; torchvision's ``ImageFolder``): the labels
  are the sorted names of the first-level folders, an empty class folder keeps its label;
- a **captioned folder** (Hugging Face ``imagefolder``): ``metadata.jsonl`` lines with ``file_name`` and
  ``text``, as diffusers' text-to-image training scripts take it.

The identity of a dataset is the sha256 of its file list (relative names, sizes, modification times), not
its path: the same files elsewhere are the same dataset; a file touched is a new one. Listing and hashing
use ``os.scandir`` (one ``stat`` per file, no reads), 100,000 files in about a second.

An image is decoded as ADM and DiT decode theirs: halved with a box filter while its short side is at least
twice the resolution, resized bicubically so that the short side is the resolution, centre-cropped; flipped
horizontally when the step's draw says so (the flips are drawn by the training loop, so they are a function
of (seed, step) like everything else it draws).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from diffbench.core.errors import BadInputError
from diffbench.metrics.inputs import IMAGE_SUFFIXES, rgb8

METADATA = "metadata.jsonl"


@dataclass
class Listing:
    """The files of a dataset folder, in a fixed order, with their labels or captions."""

    root: Path
    files: list[str]  # relative to root, sorted
    labels: list[int]  # class index per file (0 for a captioned folder)
    class_names: list[str] = field(default_factory=list)
    captions: list[str] | None = None
    skipped: list[str] = field(default_factory=list)  # "file: why", with skip_bad
    sha256: str = ""  # the identity: names, sizes and mtimes


def _bad(problem: str, fix: str, skip_bad: bool, skipped: list[str]) -> None:
    """A bad entry: fatal (one line naming it and the fix), or skipped and counted with ``skip_bad``."""
    if not skip_bad:
        raise BadInputError(f"{problem}; {fix}, or skip such files (skip_bad = true, --skip-bad)")
    skipped.append(problem)


def _walk(folder: Path, skip_bad: bool, skipped: list[str], seen: set[tuple[int, int]]) -> list[os.DirEntry[str]]:
    """Image files under ``folder`` (symlinks followed, a loop refused or skipped), sorted by path."""
    try:
        st = folder.stat()
    except OSError as e:
        _bad(f"{folder}: unreadable ({e.strerror or e})", "fix or remove it", skip_bad, skipped)
        return []
    if (st.st_dev, st.st_ino) in seen:
        _bad(f"{folder}: a symlink loop (this folder is inside itself)", "remove the link", skip_bad, skipped)
        return []
    seen = seen | {(st.st_dev, st.st_ino)}
    out: list[os.DirEntry[str]] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError as err:
            _bad(f"{entry.path}: unreadable ({err.strerror or err})", "fix or remove it", skip_bad, skipped)
            continue
        if is_dir:
            out.extend(_walk(Path(entry.path), skip_bad, skipped, seen))
        elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
            try:
                entry.stat()
            except OSError as err:  # a dangling link, or a link in a loop
                _bad(f"{entry.path}: unreadable ({err.strerror or err})", "fix or remove it", skip_bad, skipped)
                continue
            out.append(entry)
    return out


def _digest(entries: list[os.DirEntry[str]], rels: list[str]) -> str:
    """sha256 of (relative name, size, mtime) of each file, in order (``DirEntry.stat`` is the one stat)."""
    h = hashlib.sha256()
    for e, rel in zip(entries, rels, strict=True):
        st = e.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()



def list_folder(root: str | Path, skip_bad: bool = False) -> Listing:
    """The dataset in ``root``: a captioned folder when it holds ``metadata.jsonl``, else a class-folder tree
    (images directly in ``root`` form one class)."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: no such folder; give a class-folder tree, a captioned folder "
                            f"({METADATA}), a latents folder, digits or shapes")
    if (root / METADATA).is_file():
        return _captioned(root, skip_bad)
    skipped: list[str] = []
    entries = _walk(root, skip_bad, skipped, set())
    prefix = len(os.path.join(str(root), ""))
    rels = [e.path[prefix:] for e in entries]  # string slicing: 100,000 Path objects cost seconds
    tops = [r.split(os.sep, 1)[0] if os.sep in r else "" for r in rels]
    dirs = sorted(e.name for e in os.scandir(root) if e.is_dir())
    classes = [d for d in dirs if not d.startswith(".")] or [""]
    present = set(tops)
    for name in classes:
        if name and name not in present:
            _bad(f"{root / name}: an empty class folder (no images)", "remove it or add its images",
                 skip_bad, skipped)
    index = {name: i for i, name in enumerate(classes)}
    files, labels, kept = [], [], []
    for e, rel, top in zip(entries, rels, tops, strict=True):
        if top not in index:  # an image beside the class folders: not in any class
            _bad(f"{e.path}: an image outside the class folders", "move it into one", skip_bad, skipped)
            continue
        files.append(rel)
        labels.append(index[top])
        kept.append(e)
    if not files:
        raise BadInputError(f"{root}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))}) in its class "
                            "folders; give a folder of class folders of images")
    return Listing(root, files, labels, classes if classes != [""] else [], None, skipped, _digest(kept, files))


def _captioned(root: Path, skip_bad: bool) -> Listing:
    skipped: list[str] = []
    files, captions, kept = [], [], []
    where = root / METADATA
    for n, line in enumerate(where.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            _bad(f"{where}:{n}: not a JSON object", "write one object per line", skip_bad, skipped)
            continue
        name = row.get("file_name") if isinstance(row, dict) else None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(name, str) or not name or not isinstance(text, str):
            _bad(f"{where}:{n}: needs a file_name and a text (both strings)", "complete the line",
                 skip_bad, skipped)
            continue
        path = root / name
        try:
            if not path.resolve().is_relative_to(root.resolve()) or not path.is_file():
                raise OSError("not a file inside the folder")
            entry = next(e for e in os.scandir(path.parent) if e.name == path.name)
            entry.stat()
        except (OSError, StopIteration) as e:
            _bad(f"{where}:{n}: {name}: no such image in {root} ({e})", "fix the line or add the file",
                 skip_bad, skipped)
            continue
        files.append(name)
        captions.append(text)
        kept.append(entry)
    if not files:
        raise BadInputError(f"{where}: no usable lines; each needs {{\"file_name\": ..., \"text\": ...}}")
    return Listing(root, files, [0] * len(files), [], captions, skipped, _digest(kept, files))


def centre_crop(im: Image.Image, resolution: int) -> Image.Image:
    """ADM's and DiT's preprocessing: box-halve while the short side is >= 2x the resolution, bicubic to the
    resolution on the short side, centre crop."""
    while min(im.size) >= 2 * resolution:
        im = im.resize((im.size[0] // 2, im.size[1] // 2), resample=Image.Resampling.BOX)
    scale = resolution / min(im.size)
    im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), resample=Image.Resampling.BICUBIC)
    left, top = (im.size[0] - resolution) // 2, (im.size[1] - resolution) // 2
    return im.crop((left, top, left + resolution, top + resolution))


def decode(path: Path, resolution: int, flip: bool = False) -> np.ndarray:
    """HWC uint8 RGB at ``resolution``; alpha dropped (as ``convert("RGB")`` does), 16-bit scaled to 8 bits;
    any failure is a :class:`BadInputError` naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            a = rgb8(im, path)
    except BadInputError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for one thing: this file cannot be read
        raise BadInputError(f"{path}: unreadable image ({type(e).__name__}: {' '.join(str(e).split())[:80]}); "
                            "replace or remove it, or skip such files (skip_bad = true, --skip-bad)") from None
    out = np.asarray(centre_crop(Image.fromarray(a), resolution))
    return np.ascontiguousarray(out[:, ::-1]) if flip else out

