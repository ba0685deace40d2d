"""Reading weight files without running code from them: the one gate every file passes before a loader.

A PyTorch ``.pt``/``.pth``/``.bin``/``.ckpt`` file is a pickle, and unpickling can run arbitrary
code. Every path by which a user's file reaches a loader (ours or a library's: torch-fidelity,
clean-fid, open_clip, transformers, diffusers) goes through :func:`load_weights` or
:func:`check_pickles` first, both ``torch.load(weights_only=True)``, which resolves only tensors and
plain containers and refuses any other global (``os.system`` included).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from diffbench.core.errors import BadInputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def load_weights(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; anything refused or unreadable is one line.

    ``mmap`` (zip-format files only) maps tensor data instead of reading it: a cheap check of a large file."""
    p = Path(path)
    kwargs = {"mmap": True} if mmap and zipfile.is_zipfile(p) else {}
    try:
        return torch.load(p, map_location="cpu", weights_only=True, **kwargs)
    except Exception as e:  # weights_only refuses pickles that need code execution
        msg = " ".join(str(e).split())[:120] or type(e).__name__
        raise BadInputError(f"{p}: refused or unreadable as weights only ({msg}); "
                            "convert it to safetensors or a plain state dict") from None


def check_pickles(path: str | Path) -> None:
    """Refuse a directory (or file) holding any pickle that a weights-only load refuses, before a library
    that might unpickle it without that restriction is given the path."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if f.suffix.lower() in PICKLE_SUFFIXES:
            load_weights(f, mmap=True)


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict of tensors from safetensors or a weights-only pickle: a bare one (DiT's releases) or one nested
    under ``ema`` / ``model`` / ``state_dict``. Anything else is a one-line error naming the file."""
    p = Path(path)
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as e:  # noqa: BLE001 - any reading problem is the same user fix
            raise BadInputError(f"{p}: not a readable safetensors file ({str(e)[:120]})") from None
    obj = load_weights(p)
    for key in ("ema", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise BadInputError(f"{p}: does not hold a state dict of tensors")
    return obj
