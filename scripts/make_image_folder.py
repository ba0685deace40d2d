"""Write scikit-learn's digits as a class-folder tree of PNGs (ImageNet's layout: ``OUT/3/0007.png``), the
generated image folder the ``data-cpu`` suite trains on, or as a captioned folder (``--captions``: the
procedural shapes with ``metadata.jsonl``, Hugging Face's imagefolder layout).

    python scripts/make_image_folder.py data/digits-png
    diffbench run data-cpu --set dataset=data/digits-png --devices cpu,cpu --out runs/data-cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from diffbench.diffusion import datasets


def digit_folders(out: Path, size: int) -> int:
    d = datasets.digits(size)
    counts: dict[int, int] = {}
    for img, label in zip(d.images, d.labels.tolist(), strict=True):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        k = counts[label] = counts.get(label, -1) + 1
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{k:04d}.png")
    return len(d.images)


def captioned_folder(out: Path, size: int, n: int) -> int:
    d = datasets.shapes(n, size, seed=1)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.jsonl", "w") as f:
        for k, (img, text) in enumerate(zip(d.images, d.captions or [], strict=True)):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(out / f"{k:05d}.png")
            f.write(json.dumps({"file_name": f"{k:05d}.png", "text": text}) + "\n")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=16, help="image size in pixels (default: %(default)s)")
    ap.add_argument("--captions", type=int, metavar="N", help="N captioned shapes instead of the digits' classes")
    args = ap.parse_args()
    n = captioned_folder(args.out, args.size, args.captions) if args.captions else digit_folders(args.out, args.size)
    print(f"wrote {n} images to {args.out}")


if __name__ == "__main__":
    main()
