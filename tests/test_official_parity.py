"""Parity with the official implementations, given the same weights.

The official code is not part of diffbench. Point these variables at checkouts to run:
    DIFFBENCH_DIT_REPO=/path/to/facebookresearch/DiT   (needs timm)
    DIFFBENCH_UVIT_REPO=/path/to/baofff/U-ViT          (needs einops)
    DIFFBENCH_DIT_CKPT=/path/to/DiT-XL-2-256x256.pt    (a released checkpoint)
Weights are randomised (the official init zeroes the output layers, which would make any two
models agree trivially), copied into ours with strict loading, and outputs compared.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from diffbench import models

DIT_REPO = os.environ.get("DIFFBENCH_DIT_REPO")
UVIT_REPO = os.environ.get("DIFFBENCH_UVIT_REPO")
DIT_CKPT = os.environ.get("DIFFBENCH_DIT_CKPT")


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _transfer_and_compare(official, ours, args, tmp_path: Path, call_ours=None) -> float:
    official.eval()
    ours.eval()
    _randomise(official)
    ckpt = tmp_path / "official.pt"
    torch.save(official.state_dict(), ckpt)  # a plain state dict, as the released checkpoints are
    models.load_checkpoint(ours, ckpt)
    with torch.no_grad():
        ref = official(*args)
        got = (call_ours or ours)(*args)
    assert got.shape == ref.shape
    return (got - ref).abs().max().item()


@pytest.mark.skipif(not DIT_REPO, reason="set DIFFBENCH_DIT_REPO to a checkout of facebookresearch/DiT")
@pytest.mark.parametrize("name", ["DiT-S/2", "DiT-B/4", "DiT-S/8"])
def test_dit_matches_official(name, tmp_path):
    pytest.importorskip("timm")
    official_models = _load_module("official_dit_models", Path(DIT_REPO) / "models.py")
    torch.manual_seed(0)
    official = official_models.DiT_models[name](input_size=32, num_classes=1000)
    ours = models.build(name)
    # the frozen sin-cos table is computed, not loaded: it must be identical from init
    assert torch.equal(official.pos_embed, ours.pos_embed)
    x, t, y = torch.randn(3, 4, 32, 32), torch.tensor([0.0, 500.0, 999.0]), torch.tensor([1, 500, 1000])
    assert _transfer_and_compare(official, ours, (x, t, y), tmp_path) < 1e-5
    with torch.no_grad():  # classifier-free guidance, including the 3-channel quirk
        a = official.forward_with_cfg(x[:2].repeat(2, 1, 1, 1), t[:2].repeat(2), torch.tensor([3, 7, 1000, 1000]), 4.0)
        b = ours.forward_with_cfg(x[:2].repeat(2, 1, 1, 1), t[:2].repeat(2), torch.tensor([3, 7, 1000, 1000]), 4.0)
    assert (a - b).abs().max().item() < 1e-5


def _uvit_modules():
    pytest.importorskip("einops")
    sys.path.insert(0, UVIT_REPO)
    try:
        from libs import uvit, uvit_t2i  # type: ignore[import-not-found]
    finally:
        sys.path.remove(UVIT_REPO)
    return uvit, uvit_t2i


@pytest.mark.skipif(not UVIT_REPO, reason="set DIFFBENCH_UVIT_REPO to a checkout of baofff/U-ViT")
@pytest.mark.parametrize("name", ["U-ViT-S/2", "U-ViT-S/2-T2I", "tiny-class-noconv"])
def test_uvit_matches_official(name, tmp_path):
    import dataclasses

    uvit, uvit_t2i = _uvit_modules()
    if name == "tiny-class-noconv":  # the class-conditional, conv=False path of U-ViT-H/2, at small size
        cfg = models.resolve("U-ViT-H/2", embed_dim=128, depth=4, num_heads=4)
    else:
        cfg = models.resolve(name)
    kw = dataclasses.asdict(cfg)
    text = kw.pop("clip_dim") > 0
    n = 2
    x, t = torch.randn(n, cfg.in_chans, cfg.img_size, cfg.img_size), torch.tensor([10.0, 700.0])
    if text:
        kw.pop("num_classes")
        official = uvit_t2i.UViT(**kw, clip_dim=cfg.clip_dim)
        args = (x, t, torch.randn(n, cfg.num_clip_token, cfg.clip_dim))
        call = None
    else:
        kw.pop("num_clip_token")
        official = uvit.UViT(**kw)
        y = torch.tensor([3, 1000]) if cfg.num_classes > 0 else None
        args = (x, t) if y is None else (x, t, y)
        call = None
    ours = cfg.build()
    assert _transfer_and_compare(official, ours, args, tmp_path, call) < 1e-5


@pytest.mark.skipif(not DIT_CKPT, reason="set DIFFBENCH_DIT_CKPT to a released DiT-XL/2 256x256 checkpoint")
def test_released_dit_checkpoint_loads_strictly():
    net = models.build("DiT-XL/2")
    models.load_checkpoint(net, DIT_CKPT)
