"""torchrun: sampling and scoring split over ranks by global batch index give the images and the FID of one
process (gloo, on this CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffbench.core.distributed import World, shard
from tests.conftest import ROOT

# A rank can abort in gloo's C++ teardown ("terminate called without an active exception", SIGABRT) after its
# work: seen once in a full test run on a loaded 2-core machine, not on a rerun. Such a launch is tried once more;
# any other failure is reported as it is.
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
           "diffbench", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    if proc.returncode != 0 and GLOO_TEARDOWN_ABORT in proc.stderr:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    return proc


def single(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "diffbench", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def test_shards_cover_every_batch_once_in_any_world():
    for size in (1, 2, 3, 8):
        got = sorted(b for r in range(size) for b in shard(70, 16, World(r, size)))
        assert got == [(j, 16 * j, min(16 * j + 16, 70)) for j in range(5)]


def test_compensated_sums_do_not_depend_on_the_order_batches_are_added():
    from diffbench.metrics.stats import FeatureStats

    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(16, 32)).astype(np.float32) * 10 ** rng.uniform(-3, 3) for _ in range(12)]
    one = FeatureStats(32)
    for b in batches:
        one.update(b)
    ranks = [FeatureStats(32) for _ in range(3)]
    for j, b in enumerate(batches):
        ranks[j % 3].update(b)
    merged = ranks[0].merge(ranks[1]).merge(ranks[2])
    assert np.array_equal(one.total, merged.total) and np.array_equal(one.total_outer, merged.total_outer)
    plain = sum(b.astype(np.float64).T @ b.astype(np.float64) for b in batches)
    assert np.allclose(one.total_outer, plain, rtol=1e-12)


def test_torchrun_sampling_and_fid_equal_one_process(tmp_path: Path):
    """64 images from 2 ranks are bit-identical to one process's; FID, KID and precision/recall of them too."""
    common = ["dit", "--num-samples", "64", "--steps", "4", "--batch-size", "16", "--format", "npz"]
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = single("sample", *common, "--out", str(one))
    assert p1.returncode == 0, p1.stderr
    p2 = torchrun(2, "sample", *common, "--out", str(two))
    assert p2.returncode == 0, p2.stderr[-3000:]
    a, b = np.load(one / "samples.npz"), np.load(two / "samples.npz")
    assert a["arr_0"].shape == (64, 16, 16, 3)
    assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert p2.stdout.count("wrote 64 images") == 1  # rank 0 alone prints and writes
    ref = tmp_path / "ref"
    assert single("sample", *common[:2], "40", *common[3:], "--seed", "1", "--out", str(ref)).returncode == 0
    fid = ["fid", str(one / "samples.npz"), str(ref / "samples.npz"), "--detector", "digits", "--kid", "--prc",
           "--batch-size", "10", "--format", "json"]
    f1, f2 = single(*fid), torchrun(2, *fid)
    assert f1.returncode == 0 and f2.returncode == 0, f2.stderr[-3000:]
    r1, r2 = json.loads(f1.stdout), json.loads(f2.stdout)
    assert r1["n_a"] == r2["n_a"] == 64 and r1["n_b"] == r2["n_b"] == 40
    assert r2["fid"] == pytest.approx(r1["fid"], rel=1e-9, abs=0)
    for key in ("kid", "kid_std", "precision", "recall"):
        assert r2[key] == pytest.approx(r1[key], rel=1e-9, abs=0), key


def test_commands_that_do_not_shard_refuse_torchrun(cli, tmp_path: Path):
    env = dict(os.environ, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "diffbench", "count", "DiT-S/8"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2 and "does not run under torchrun" in proc.stderr and "Traceback" not in proc.stderr


def test_a_rank_with_no_batch_still_joins_and_the_result_is_one_process(tmp_path: Path):
    """10 images at batch 64 on 2 ranks: rank 1 gets no batch (it crashed reshaping zero rows)."""
    from diffbench.bench.evaluate import save_pngs
    from diffbench.diffusion import datasets

    images = datasets.digits(8).images
    save_pngs(images[:10], tmp_path / "a")
    save_pngs(images[10:20], tmp_path / "b")
    fid = ["fid", str(tmp_path / "a"), str(tmp_path / "b"), "--detector", "digits", "--format", "json"]
    f1, f2 = single(*fid), torchrun(2, *fid)
    assert f1.returncode == 0 and f2.returncode == 0, f2.stderr[-3000:]
    assert json.loads(f2.stdout)["fid"] == pytest.approx(json.loads(f1.stdout)["fid"], rel=1e-9, abs=0)
    s2 = torchrun(2, "stats", str(tmp_path / "a"), "-o", str(tmp_path / "a.npz"), "--detector", "digits")
    assert s2.returncode == 0, s2.stderr[-3000:]
    with np.load(tmp_path / "a.npz") as z:
        assert int(z["count"]) == 10
