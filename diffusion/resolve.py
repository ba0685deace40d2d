"""The one place a dataset's name or path is read: which source it is, and its identity.

``digits`` and ``shapes`` are embedded; anything else is a path: an ADM-style ``.npz``, a folder of latents
written by ``diffbench latents`` (``latents.json``), a captioned folder (``metadata.jsonl``) or a class-folder
tree.
"""

from __future__ import annotations

from pathlib import Path

from diffbench.core.errors import BadInputError
from diffbench.core.files import sha256_file
from diffbench.diffusion import datasets, folders
from diffbench.diffusion.latents import MANIFEST, LatentSource, manifest_sha256
from diffbench.diffusion.sources import DataSource, FolderSource, TensorSource

EMBEDDED = ("digits", "shapes")


def dataset_sha256(dataset: str, skip_bad: bool = False) -> str:
    """The content identity of a dataset on disk (the hash of its file list, or of an .npz's bytes); '' for an
    embedded one. Its problems (an empty class folder, a line without a file name) are found here, before a case
    runs, unless ``skip_bad``."""
    if dataset in EMBEDDED:
        return ""
    p = Path(dataset)
    if p.is_file():
        return sha256_file(p)
    if (p / MANIFEST).is_file():
        return manifest_sha256(p)
    return folders.list_folder(p, skip_bad).sha256


def open_source(dataset: str, resolution: int, seed: int = 0, skip_bad: bool = False, detector: str = "",
                n_shapes: int = 3000) -> DataSource:
    """The source a ``dataset`` setting names: ``digits``, ``shapes``, or a path (an ``.npz``, a folder of
    latents, a captioned folder or a class-folder tree)."""
    if dataset == "digits":
        d = datasets.digits(resolution)
        return TensorSource("digits", d.images, d.labels, "class", 10, detector or "digits",
                            ident={"kind": "embedded", "name": "digits"})
    if dataset == "shapes":
        d = datasets.shapes(n_shapes, resolution, seed=seed + 1)
        return TensorSource("shapes", d.images, d.labels[:, 0], "text", 3, detector or "shapes", d.captions,
                            ident={"kind": "embedded", "name": "shapes", "n": n_shapes})
    p = Path(dataset)
    if p.is_file() and p.suffix == ".npz":
        d = datasets.from_npz(dataset, resolution)
        return TensorSource(str(p), d.images, d.labels, "class", int(d.labels.max()) + 1,
                            detector or "inception-v3", flippable=True,
                            ident={"kind": "npz", "sha256": sha256_file(p)})
    if (p / MANIFEST).is_file():
        return LatentSource(p, detector or "inception-v3")
    if p.is_dir():
        return FolderSource(p, resolution, skip_bad, detector or "inception-v3")
    raise BadInputError(f"dataset {dataset!r}: not digits or shapes, and no such folder or .npz file; give a "
                        "class-folder tree, a captioned folder (metadata.jsonl), a latents folder or an .npz")
