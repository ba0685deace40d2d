"""Benchmarks of the data pipeline (#26): the dataset hash of a 100K-file class-folder tree in under 10 s, and the
training loop waiting for its data under 5% of its step time when 2 DataLoader workers decode PNGs."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.mark.benchmark
def test_hashing_a_100k_file_tree_takes_under_10_s(benchmark, tmp_path: Path):
    from diffbench.diffusion.folders import list_folder

    png = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    data = png.read_bytes()
    root = tmp_path / "tree"
    for c in range(100):  # ImageNet's shape at 1/13: 100 classes of 1,000 files
        d = root / f"n{c:08d}"
        d.mkdir(parents=True)
        for i in range(1000):
            (d / f"n{c:08d}_{i}.JPEG").write_bytes(data)
    os.sync()
    seconds = {}

    def hashed() -> str:
        t0 = time.perf_counter()
        listing = list_folder(root)
        seconds["hash"] = time.perf_counter() - t0
        assert len(listing.files) == 100_000 and len(listing.class_names) == 100
        return listing.sha256

    benchmark.pedantic(hashed, rounds=1, iterations=1)
    print(f"listed and hashed 100,000 files in {seconds['hash']:.2f} s")
    assert seconds["hash"] < 10


@pytest.mark.benchmark
def test_two_workers_keep_the_data_wait_under_5_percent(benchmark, tmp_path: Path):
    from diffbench.diffusion.config import Loop, TrainConfig
    from diffbench.diffusion.resolve import open_source
    from diffbench.diffusion.training import train
    from diffbench.models.denoiser import Denoiser
    from diffbench.models.dit import DiTConfig
    from tests.data_trees import digit_tree

    root = digit_tree(tmp_path / "digits", per_class=100, resolution=16)
    got = {}

    def trained() -> float:
        torch.manual_seed(0)
        model = Denoiser("dit", DiTConfig(input_size=16, patch_size=2, in_channels=3, hidden_size=64, depth=4,
                                          num_heads=4, num_classes=10), "class")
        cfg = TrainConfig(steps=60, batch_size=32, lr=1e-3, checkpoint_every=0)
        _, res = train(model, open_source(str(root), 16), None, cfg, tmp_path / "run", loop=Loop(workers=2))
        got.update(res.timing)
        return float(res.timing["data_wait_fraction"])

    wait = benchmark.pedantic(trained, rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in got.items() if k != "step_ms"})
    print(f"data wait {wait:.1%} of {got['step_s_p50'] * 1e3:.1f} ms steps, {got['images_per_s']:.0f} img/s")
    assert wait < 0.05
