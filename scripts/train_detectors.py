"""Train the embedded detectors from a seed and write them to metrics/assets (safetensors + SHA256SUMS).

    python scripts/train_detectors.py            # all three, about a minute on a 2-core CPU

Reproducible: fixed seeds, single-threaded CPU math, deterministic algorithms.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffbench.diffusion import datasets  # noqa: E402
from diffbench.metrics import embedded  # noqa: E402
from diffbench.metrics.captions import tokenize  # noqa: E402


def _fit(name: str, model: torch.nn.Module, n: int, batch: int, epochs: int, g: torch.Generator,
         loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """AdamW over shuffled mini-batches; ``loss_fn(indices)`` may draw from ``g`` (the one seeded generator)."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            loss = loss_fn(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        print(f"{name}: epoch {epoch + 1}/{epochs} loss {total / n:.4f}")


def _train_classifier(name: str, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    net = embedded.FeatureNet(embedded.DETECTOR_SPECS[name]["classes"])
    x = embedded.preprocess(images)
    y = labels if labels.ndim == 2 else labels[:, None]
    g = torch.Generator().manual_seed(seed)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        xb = x[idx] + 0.05 * torch.randn(x[idx].shape, generator=g)  # light noise: features robust to it
        return sum(F.cross_entropy(out, y[idx, j]) for j, out in enumerate(net(xb)))  # type: ignore[return-value]

    _fit(name, net, len(x), 64, epochs, g, loss_fn)
    with torch.no_grad():
        acc = [(out.argmax(1) == y[:, j]).float().mean().item() for j, out in enumerate(net(x))]
    print(f"{name}: train accuracy per head {[round(a, 3) for a in acc]}")
    return net.state_dict()


def _train_clip(images: torch.Tensor, captions: list[str], epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = embedded.ShapesCLIP()
    x, t = embedded.preprocess(images), tokenize(captions)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        zi, zt = model.embed_images(x[idx]), model.embed_texts(t[idx])
        logits = model.logit_scale.exp().clamp(max=100) * zi @ zt.T
        # identical captions in a batch are positives too (the procedural space is small)
        same = (t[idx][:, None] == t[idx][None]).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
        loss_t = -(target * logits.log_softmax(0)).sum(0).mean()
        return (loss_i + loss_t) / 2

    _fit("shapes-clip", model, len(x), 128, epochs, torch.Generator().manual_seed(seed), loss_fn)
    return model.state_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(embedded.ASSETS))
    args = parser.parse_args()
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    d = datasets.digits(embedded.RESOLUTION)
    states = {"digits.safetensors": _train_classifier("digits", d.images, d.labels, 12, args.seed)}
    s = datasets.shapes(6000, embedded.RESOLUTION, seed=args.seed + 1)
    states["shapes.safetensors"] = _train_classifier("shapes", s.images, s.labels, 8, args.seed)
    states[embedded.CLIP_FILE] = _train_clip(s.images, s.captions or [], 12, args.seed)
    lines = []
    for file, state in states.items():
        path = out / file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {file}")
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) sha256 {digest}")
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
