"""GPU-marked tests of training inside a case (#26): bf16 autocast and TF32, torch.compile with its first step
apart, and data-parallel training over NCCL equal to one GPU at the same global batch. Written for ``tox -e gpu``;
no GPU was lent when they were written, so they have not run on hardware."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.data_trees import class_tree

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _model():
    from diffbench.models.denoiser import Denoiser
    from diffbench.models.dit import DiTConfig

    torch.manual_seed(0)
    return Denoiser("dit", DiTConfig(input_size=16, patch_size=2, in_channels=3, hidden_size=128, depth=4,
                                     num_heads=4, num_classes=3), "class", num_classes=3)


def test_bf16_training_learns_and_times_its_steps(tmp_path):
    from diffbench.diffusion.config import TrainConfig
    from diffbench.diffusion.resolve import open_source
    from diffbench.diffusion.training import train

    source = open_source(str(class_tree(tmp_path / "d", per_class=20)), 16)
    _, res = train(_model(), source, None, TrainConfig(steps=100, batch_size=32, lr=1e-3, bf16=True), tmp_path / "r",
                   device="cuda")
    assert np.mean(res.losses[-10:]) < np.mean(res.losses[:10])
    assert res.timing["step_s_p50"] > 0 and res.timing["images_per_s"] > 0


def test_compile_records_its_first_step_apart(tmp_path):
    from diffbench.diffusion.config import Loop, TrainConfig
    from diffbench.diffusion.resolve import open_source
    from diffbench.diffusion.training import train

    source = open_source(str(class_tree(tmp_path / "d", per_class=20)), 16)
    _, res = train(_model(), source, None, TrainConfig(steps=30, batch_size=32, lr=1e-3), tmp_path / "r",
                   device="cuda", loop=Loop(compile=True))
    assert res.timing["first_step_s"] > 5 * res.timing["step_s_p50"]  # compilation is in the first step only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank, world, port, root, out, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from diffbench.core import distributed
    from diffbench.diffusion.config import Loop, TrainConfig
    from diffbench.diffusion.resolve import open_source
    from diffbench.diffusion.training import train

    _, device = distributed.init("cuda")  # NCCL, this rank's GPU
    cfg = TrainConfig(steps=30, batch_size=16, lr=1e-3, seed=1, checkpoint_every=0, bf16=False)
    _, res = train(_model(), open_source(root, 16), None, cfg, out, device=device, loop=Loop(tf32=False))
    if rank == 0:
        queue.put(res.losses)
    distributed.finish()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_over_nccl_equal_one(tmp_path):
    root = str(class_tree(tmp_path / "d", per_class=20))
    ctx = mp.get_context("spawn")
    curves = {}
    for world in (1, 2):
        queue, port = ctx.Queue(), _free_port()
        procs = [ctx.Process(target=_rank, args=(r, world, port, root, str(tmp_path / f"w{world}"), queue))
                 for r in range(world)]
        for p in procs:
            p.start()
        curves[world] = np.array(queue.get(timeout=600))
        for p in procs:
            p.join(120)
    assert np.max(np.abs(curves[1] - curves[2]) / np.abs(curves[1])) < 1e-4
