"""The procedural captions, in one place: their grammar (what ``diffusion.datasets.shapes`` draws), the
vocabulary the embedded text encoders and CLIP index (the order is part of the committed weights),
and tokenisation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffbench.core.errors import BadInputError

if TYPE_CHECKING:  # the vocabulary is read by the pipelines' specs, listed without torch
    import torch

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
           "purple": (150, 60, 190), "white": (240, 240, 240)}
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
SIZES = ("small", "large")

# Index = token id: the embedded CLIP's word table was trained with this order (metrics/assets/), so it never
# changes; every word the grammar can write is in it (checked below, at import).
VOCAB = ("<pad>", "a", "at", "the", "circle", "square", "triangle", "red", "green", "blue", "yellow", "purple",
         "white", "top", "bottom", "left", "right", "center", "small", "large")
MAX_WORDS = 12


def caption(shape: str, colour: str, position: str, size: str) -> str:
    return f"a {size} {colour} {shape} at the {position}"


def _check_grammar() -> None:
    longest = caption(SHAPES[0], next(iter(COLOURS)), max(POSITIONS, key=len), SIZES[0]).split()
    words = {w for s in SHAPES for c in COLOURS for p in POSITIONS for z in SIZES for w in caption(s, c, p, z).split()}
    assert words <= set(VOCAB) and len(longest) <= MAX_WORDS, "the caption grammar outgrew the vocabulary"


_check_grammar()


def tokenize(captions: list[str]) -> torch.Tensor:
    """Captions -> (N, MAX_WORDS) token ids, 0-padded; a word outside the vocabulary is a one-line error."""
    import torch

    index = {w: i for i, w in enumerate(VOCAB)}
    out = torch.zeros(len(captions), MAX_WORDS, dtype=torch.long)
    for i, c in enumerate(captions):
        words = c.lower().replace(",", " ").replace(".", " ").split()
        unknown = [w for w in words if w not in index]
        if unknown:
            raise BadInputError(f"caption {c!r} has words outside the embedded CLIP's vocabulary: {unknown}")
        ids = [index[w] for w in words][:MAX_WORDS]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
