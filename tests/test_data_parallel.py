"""Data-parallel training inside a case: the same loss curve and EMA on 2 ranks as on 1, at one global batch; a
run killed or preempted mid-training continues from its checkpoint to the uninterrupted curve."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.data_trees import class_tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank, world, port, root, out, queue, micro):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from diffbench.diffusion.config import Loop, TrainConfig
    from diffbench.diffusion.resolve import open_source
    from diffbench.diffusion.training import train
    from diffbench.models.denoiser import Denoiser
    from diffbench.models.dit import DiTConfig

    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = Denoiser("dit", DiTConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2,
                                      num_heads=2, num_classes=3), "class", num_classes=3)
    cfg = TrainConfig(steps=50, batch_size=8, lr=1e-3, seed=1, checkpoint_every=0)
    ema, res = train(model, open_source(root, 16), None, cfg, out, loop=Loop(micro_batch=micro))
    if rank == 0:
        queue.put((res.losses, [p.detach().numpy().copy() for p in ema.parameters()], res.timing["world_size"]))
    if world > 1:
        dist.destroy_process_group()


def _train(world, root, out, micro=0):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, root, out, queue, micro)) for r in range(world)]
    for p in procs:
        p.start()
    got = queue.get(timeout=300)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return got


def test_two_ranks_equal_one_at_the_same_global_batch(tmp_path):
    """50 steps of a tiny DiT on a generated class-folder tree (flips on): 1 rank (its batch of 8 in micro-batches
    of 2, gradients accumulated) and 2 ranks (4 each, DDP over gloo) give the same loss curve and EMA."""
    root = str(class_tree(tmp_path / "data", classes=3, per_class=6))
    one = _train(1, root, str(tmp_path / "one"), micro=2)
    two = _train(2, root, str(tmp_path / "two"))
    assert (one[2], two[2]) == (1, 2)
    l1, l2 = np.array(one[0]), np.array(two[0])
    assert len(l1) == len(l2) == 50
    assert np.max(np.abs(l1 - l2) / np.abs(l1)) < 1e-4
    assert max(float(np.abs(a - b).max()) for a, b in zip(one[1], two[1], strict=True)) < 1e-4
    assert l1[-5:].mean() < l1[:5].mean()  # and it learns


def test_a_batch_that_does_not_split_is_one_line():
    from diffbench.core.errors import ConfigError
    from diffbench.diffusion.steps import Share

    with pytest.raises(ConfigError, match="multiple of the world size"):
        Share(0, 3).rows(8)


def _score_rank(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from diffbench.bench.evaluate import score
    from diffbench.diffusion import datasets
    from diffbench.metrics.inputs import LazyBatches

    if world > 1:
        dist.init_process_group("gloo")
    digits = datasets.digits(16).images
    made = []

    def make(b0, b1):  # "samples" k = b0 .. b1-1: a digit, shifted by k (a function of k only)
        made.append((b0, b1))
        return torch.stack([torch.roll(digits[k], shifts=k % 5, dims=-1) for k in range(b0, b1)])

    got = score(LazyBatches(make, 200, 32), digits[:500], "digits", None, seed=0, kid=True)
    queue.put((rank, {k: r.value for k, r in got.items()}, made))
    if world > 1:
        dist.destroy_process_group()


def test_samples_scored_over_ranks_equal_one_process_and_no_rank_makes_anothers():
    """A case of several ranks scores its samples batch by batch, each rank making only its own batches (rank 0
    receives the detector's sums, never images): FID and KID equal one process's."""
    ctx = mp.get_context("spawn")
    got = {}
    for world in (1, 2):
        queue, port = ctx.Queue(), _free_port()
        procs = [ctx.Process(target=_score_rank, args=(r, world, port, queue)) for r in range(world)]
        for p in procs:
            p.start()
        got[world] = [queue.get(timeout=300) for _ in range(world)]
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    (one,) = got[1]
    by_rank = dict((r, (values, made)) for r, values, made in got[2])
    assert [b0 for b0, _ in by_rank[0][1]] == [0, 64, 128, 192] and [b0 for b0, _ in by_rank[1][1]] == [32, 96, 160]
    for key, value in one[1].items():
        assert by_rank[0][0][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.slow  # 2 ranks as 2 processes is the default run's; this is their start by submitit's tasks
def test_a_case_of_two_ranks_as_submitit_tasks_equals_torchrun(tmp_path):
    """devices_per_case = 2 through --launcher submitit: one job of 2 tasks (srun's on Slurm; submitit's local
    executor here), each a rank joining the process group from submitit's environment, rank 0 handing the records
    over; the same loss curve as the same case on 2 torchrun ranks of the local runner."""
    pytest.importorskip("submitit")
    import json

    from tests.conftest import run_cli
    from tests.test_resume_training import _suite

    suite = _suite(tmp_path, world=2, steps=40)
    curves = []
    for name, extra in (("local", ["--devices", "cpu,cpu"]), ("tasks", ["--launcher", "submitit"])):
        p = run_cli("run", str(suite), "--out", str(tmp_path / name), "--no-progress", *extra, timeout=300)
        assert p.returncode == 0, p.stderr
        recs = {r["metric"]: r for r in map(json.loads, (tmp_path / name / "records.jsonl").read_text().splitlines())}
        assert recs["train_images_per_s"]["extra"]["world_size"] == 2
        curves.append(np.array(recs["train_loss_first"]["samples"]))
    assert len(curves[0]) == 40 and np.max(np.abs(curves[0] - curves[1]) / curves[0]) < 1e-6


def test_a_case_across_nodes_needs_the_submitit_launcher(cli, tmp_path):
    from tests.test_resume_training import _suite

    suite = _suite(tmp_path, world=2, steps=4)
    suite.write_text(suite.read_text().replace("devices_per_case = 2", "devices_per_case = 2\nnodes = 2"))
    p = cli("run", str(suite), "--out", str(tmp_path / "run"), "--devices", "cpu,cpu", "--no-progress")
    assert p.returncode == 2 and "--launcher submitit" in p.stderr and len(p.stderr.strip().splitlines()) == 1
