"""Hostile datasets on disk, end to end: each problem is one line and exit status 2 before any case runs (or, for
an image that only fails when decoded, from the command that decodes it), or with skip_bad is skipped and counted
in the records; nothing crashes."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.data_trees import captioned, class_tree

SUITE = """
name = "bad-data"
[defaults]
measure = ["train"]
dataset = "{data}"
train_steps = 4
train_batch = 8
skip_bad = {skip}
[[sweeps]]
families = ["dit"]
params = ["0.36M"]
input_shapes = ["3x16x16"]
classes = 10
cond = "{cond}"
"""


def _truncated_jpeg(root):
    path = root / "class0" / "cut.jpg"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:150])


def _empty_class(root):
    (root / "class9").mkdir()


def _symlink_loop(root):
    os.symlink(root / "class1", root / "class1" / "again")


def _alpha_and_16_bit(root):
    Image.fromarray(np.full((16, 16, 4), 200, np.uint8), "RGBA").save(root / "class0" / "alpha.png")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(root / "class1" / "deep.png")


def _suite(tmp_path, data, skip, cond="class"):
    path = tmp_path / f"suite-{skip}.toml"
    path.write_text(SUITE.format(data=data, skip=str(skip).lower(), cond=cond))
    return str(path)


@pytest.mark.parametrize("make, needle", [(_empty_class, "empty class folder"), (_symlink_loop, "symlink loop")])
def test_a_bad_tree_is_one_line_before_any_case_runs(cli, tmp_path, make, needle):
    root = class_tree(tmp_path / "data", classes=3, per_class=4)
    make(root)
    p = cli("run", _suite(tmp_path, root, False), "--out", str(tmp_path / "run"), "--no-progress")
    assert p.returncode == 2 and needle in p.stderr and "--skip-bad" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "run" / "records.jsonl").exists()


def test_a_caption_line_without_a_file_name_is_one_line(cli, tmp_path):
    root = captioned(tmp_path / "caps", ["a small red circle at the center"] * 4)
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"text": "a large blue square at the center"}) + "\n")
    p = cli("run", _suite(tmp_path, root, False, "text"), "--out", str(tmp_path / "run"), "--no-progress")
    assert p.returncode == 2 and "metadata.jsonl:5" in p.stderr and "file_name" in p.stderr, p.stderr


def test_a_truncated_jpeg_is_one_line_from_the_command_that_decodes_it(cli, tmp_path):
    root = class_tree(tmp_path / "data", classes=2, per_class=3)
    _truncated_jpeg(root)
    from diffusers import AutoencoderKL

    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  block_out_channels=(8, 16), latent_channels=4, layers_per_block=1,
                  norm_num_groups=4).save_pretrained(tmp_path / "ae")
    args = ["latents", str(root), "--autoencoder", str(tmp_path / "ae"), "--image-size", "16"]
    p = cli(*args, "--out", str(tmp_path / "lat"))
    assert p.returncode == 2 and "cut.jpg" in p.stderr and "--skip-bad" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    ok = cli(*args, "--out", str(tmp_path / "lat2"), "--skip-bad")
    assert ok.returncode == 0, ok.stderr


def test_with_skip_bad_every_problem_is_skipped_and_counted(cli, tmp_path):
    root = class_tree(tmp_path / "data", classes=3, per_class=4)
    for make in (_truncated_jpeg, _empty_class, _symlink_loop, _alpha_and_16_bit):
        make(root)
    p = cli("run", _suite(tmp_path, root, True), "--out", str(tmp_path / "run"), "--no-progress")
    assert p.returncode == 0, p.stderr
    recs = {r["metric"]: r for r in map(json.loads, (tmp_path / "run" / "records.jsonl").read_text().splitlines())}
    data = recs["train_steps"]["extra"]["data"]
    assert data["items"] == 3 * 4 + 3  # the alpha and 16-bit PNGs and the truncated JPEG are listed
    assert data["skipped"] >= 2  # the empty class and the loop when listed, the JPEG when read (if drawn)
    assert any("empty class" in s for s in data["skipped_when_listed"])
    assert {r["status"] for r in recs.values()} <= {"ok", "unsupported"}  # unsupported: MFU has no CPU peak


def test_pipelines_train_on_a_class_tree_and_a_captioned_folder(cli, tmp_path):
    """'diffbench train PIPELINE --dataset PATH' reads datasets on disk through the same sources as suites: the
    latent DiT pipeline on a class-folder tree, GLIDE (text) on a captioned folder."""
    tree = class_tree(tmp_path / "tree", classes=3, per_class=4, size=(20, 24))
    caps = captioned(tmp_path / "caps", ["a small red circle at the center", "a large blue square at the top left"])
    for pipeline, data in (("dit", tree), ("glide", caps)):
        p = cli("train", pipeline, "--dataset", str(data), "--steps", "2", "--autoencoder-steps", "2",
                "--batch-size", "4", "--out", str(tmp_path / pipeline))
        assert p.returncode == 0, p.stderr
    bad = cli("train", "glide", "--dataset", str(tree), "--steps", "2", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "no captions" in bad.stderr
