"""'diffbench latents': a dataset encoded once (both flips), resumable to the same bytes, and training on the
latents equal to training with the autoencoder in the loop."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.data_trees import digit_tree


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    ae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                       layers_per_block=1, norm_num_groups=4, sample_size=16)
    path = tmp_path_factory.mktemp("vae") / "ae"
    ae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    return digit_tree(tmp_path_factory.mktemp("digits") / "data", per_class=6, resolution=16)


def _latents(*args, threads=None, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore", **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    return subprocess.Popen([sys.executable, "-m", "diffbench", "latents", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_shards_carry_their_provenance_and_both_flips(tmp_path, tiny_vae, digits_folder):
    import diffbench
    from diffbench.diffusion.latents import Encoder
    from diffbench.diffusion.resolve import dataset_sha256, open_source
    from diffbench.models.api import read_safetensors

    got = diffbench.latents(digits_folder, tiny_vae, tmp_path / "lat", image_size=16, shard_size=16)
    assert got["shards"] == 4 and got["written"] == 4
    tensors, meta = read_safetensors(tmp_path / "lat" / "shard-00001.safetensors")
    assert tensors["latents"].shape == (16, 2, 4, 8, 8)
    assert meta["scaling_factor"] == "0.18215" and meta["source_sha256"] == dataset_sha256(str(digits_folder))
    assert len(meta["autoencoder_sha256"]) == 64
    images = open_source(str(digits_folder), 16)
    enc = Encoder(tiny_vae)
    x = images.fetch([16, 17])
    assert torch.allclose(tensors["latents"][:2, 0], enc.encode(x.x), atol=1e-5)
    assert torch.allclose(tensors["latents"][:2, 1], enc.encode(x.x.flip(-1)), atol=1e-5)
    assert tensors["labels"][:2].tolist() == x.conds.tolist()
    again = diffbench.latents(digits_folder, tiny_vae, tmp_path / "lat", image_size=16, shard_size=16)
    assert again["written"] == 0 and again["skipped"] == 4


def test_killed_and_resumed_gives_the_same_bytes(tmp_path, tiny_vae, digits_folder):
    whole = _latents(digits_folder, "--autoencoder", tiny_vae, "--out", tmp_path / "whole", "--image-size", 16,
                     "--shard-size", 8, "--encode-batch", 4)
    assert whole.wait(120) == 0, whole.stdout.read()
    p = _latents(digits_folder, "--autoencoder", tiny_vae, "--out", tmp_path / "cut", "--image-size", 16,
                 "--shard-size", 8, "--encode-batch", 4)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cut").glob("shard-*.safetensors")) and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = sorted(f.name for f in (tmp_path / "cut").glob("shard-*.safetensors"))
    assert 0 < len(done) < 8 and not (tmp_path / "cut" / "latents.json").exists()
    resumed = _latents(digits_folder, "--autoencoder", tiny_vae, "--out", tmp_path / "cut", "--image-size", 16,
                       "--shard-size", 8, "--encode-batch", 4)
    assert resumed.wait(120) == 0
    assert "already there" in resumed.stdout.read()
    names = sorted(f.name for f in (tmp_path / "whole").iterdir())
    assert names == sorted(f.name for f in (tmp_path / "cut").iterdir() if not f.name.startswith("."))
    for name in names:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "cut" / name).read_bytes(), name


def test_training_on_latents_equals_encoding_on_the_fly(tmp_path, tiny_vae, digits_folder):
    import diffbench
    from diffbench.diffusion.config import TrainConfig
    from diffbench.diffusion.latents import EncodedSource, Encoder
    from diffbench.diffusion.resolve import open_source
    from diffbench.diffusion.training import train
    from diffbench.models.denoiser import Denoiser
    from diffbench.models.dit import DiTConfig

    diffbench.latents(digits_folder, tiny_vae, tmp_path / "lat", image_size=16, shard_size=32)
    stored = open_source(str(tmp_path / "lat"), 16)
    on_the_fly = EncodedSource(open_source(str(digits_folder), 16), Encoder(tiny_vae))
    assert stored.flippable and on_the_fly.flippable
    runs = []
    for i, source in enumerate((stored, on_the_fly)):
        torch.manual_seed(0)
        model = Denoiser("dit", DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2,
                                          num_heads=2, num_classes=10), "class", num_classes=10)
        cfg = TrainConfig(steps=20, batch_size=8, lr=1e-3, seed=3, checkpoint_every=0)
        ema, res = train(model, source, None, cfg, tmp_path / f"run{i}")
        runs.append((np.array(res.losses), [p.detach().clone() for p in ema.parameters()]))
    (l1, e1), (l2, e2) = runs
    assert np.max(np.abs(l1 - l2) / np.abs(l1)) < 1e-4
    assert max(float((a - b).abs().max()) for a, b in zip(e1, e2, strict=True)) < 1e-4


def test_two_torchrun_ranks_write_the_same_shards_as_one_process(tmp_path, tiny_vae, digits_folder):
    """Shard j is encoded by rank j mod 2; the files are byte for byte those of one process."""
    one = _latents(digits_folder, "--autoencoder", tiny_vae, "--out", tmp_path / "one", "--image-size", 16,
                   "--shard-size", 16, threads=1)  # as each rank: a thread count changes a conv's last bits
    assert one.wait(120) == 0
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "diffbench", "latents", str(digits_folder), "--autoencoder", str(tiny_vae), "--out",
                          str(tmp_path / "two"), "--image-size", "16", "--shard-size", "16"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    names = sorted(f.name for f in (tmp_path / "one").iterdir())
    assert names == sorted(f.name for f in (tmp_path / "two").iterdir()) and len(names) == 5
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
