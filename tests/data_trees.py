"""Generated image datasets on disk, as a user's would be: a class-folder tree and a captioned folder."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def class_tree(root: Path, classes: int = 3, per_class: int = 6, size: tuple[int, int] = (20, 24),
               seed: int = 0) -> Path:
    """``root/classK/I.png``: images of a class share a colour (so that a label can be learnt), with noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, 3)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 30, (size[0], size[1], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def digit_tree(root: Path, per_class: int = 20, resolution: int = 16) -> Path:
    """scikit-learn's digits written as a class-folder tree of PNGs (the embedded detector can score them)."""
    from diffbench.diffusion import datasets

    d = datasets.digits(resolution)
    counts = [0] * 10
    for img, label in zip(d.images, d.labels.tolist(), strict=True):
        if counts[label] >= per_class:
            continue
        folder = root / f"{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{counts[label]:04d}.png")
        counts[label] += 1
    return root


def captioned(root: Path, captions: list[str], size: int = 16) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with open(root / "metadata.jsonl", "w") as f:
        for i, text in enumerate(captions):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": text}) + "\n")
    return root
