"""Bad input to the quality commands: one line, exit status 2, no traceback."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffbench.core.errors import BadInputError
from diffbench.metrics.inputs import to_uint8


def one_line_error(proc, fragment):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture
def good(tmp_path):
    d = tmp_path / "good"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def test_empty_folder(cli, tmp_path, good):
    (tmp_path / "empty").mkdir()
    one_line_error(cli("fid", str(tmp_path / "empty"), str(good), "--detector", "digits"), "no images")


def test_one_image(cli, tmp_path, good):
    d = tmp_path / "one"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "x.png")
    one_line_error(cli("fid", str(d), str(good), "--detector", "digits"), "one image")


def test_mixed_sizes(cli, tmp_path, good):
    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(d / "b.png")
    one_line_error(cli("fid", str(d), str(good), "--detector", "digits"), "differs from the first image")


def test_float_images_outside_their_range():
    with pytest.raises(BadInputError, match="outside their declared range"):
        to_uint8(torch.full((2, 3, 8, 8), 1.5), value_range=(-1, 1))
    with pytest.raises(BadInputError, match="explicit value range"):
        to_uint8(torch.zeros(2, 3, 8, 8))
    assert to_uint8(torch.full((1, 3, 2, 2), -1.0), (-1, 1)).max() == 0
    assert to_uint8(torch.ones(1, 1, 2, 2), (0, 1)).shape == (1, 3, 2, 2)


def test_missing_weights_file_names_file_hash_and_place(cli, good, tmp_path):
    proc = cli("fid", str(good), str(good), "--weights", str(tmp_path / "nope.pth"))
    one_line_error(proc, "weights-inception-2015-12-05-6726825d.pth not found")
    assert "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2" in proc.stderr
    assert "--weights PATH or set DIFFBENCH_INCEPTION_WEIGHTS" in proc.stderr


def test_wrong_hash_weights(cli, good, tmp_path):
    bad = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    one_line_error(cli("fid", str(good), str(good), "--weights", str(bad)), "not the published 6726825d")


def test_corrupt_npz(cli, tmp_path, good):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"PK\x03\x04 this is not a zip")
    one_line_error(cli("fid", str(p), str(good), "--detector", "digits"), "not a readable .npz")


def test_fewer_captions_than_images(cli, tmp_path, good):
    caps = tmp_path / "caps.txt"
    caps.write_text("a small red circle at the center\n")
    one_line_error(cli("clip-score", str(good), str(caps)), "12 images but 1 captions")


def test_statistics_from_another_detector_are_refused(cli, tmp_path, good):
    out = tmp_path / "s.npz"
    assert cli("stats", str(good), "-o", str(out), "--detector", "digits").returncode == 0
    one_line_error(cli("fid", str(good), str(out), "--detector", "shapes"), "not comparable")


def test_stats_then_fid_against_the_file(cli, tmp_path, good):
    out = tmp_path / "s.npz"
    assert cli("stats", str(good), "-o", str(out), "--detector", "digits").returncode == 0
    proc = cli("fid", str(good), str(out), "--detector", "digits", "--kid", "--format", "json")
    r = json.loads(proc.stdout)
    assert r["fid"] == pytest.approx(0.0, abs=1e-6) and r["n_b"] == 12
    assert "needs images on both sides" in r["not_available"]["kid"]


def test_npz_batch_input_and_clip_score_json(cli, tmp_path):
    from diffbench.diffusion import datasets

    s = datasets.shapes(16, 32, seed=99)
    np.savez(tmp_path / "imgs.npz", arr_0=s.images.permute(0, 2, 3, 1).numpy())
    (tmp_path / "caps.txt").write_text("\n".join(s.captions) + "\n")
    r = json.loads(cli("clip-score", str(tmp_path / "imgs.npz"), str(tmp_path / "caps.txt"), "--format",
                       "json").stdout)
    assert r["n"] == 16 and r["model"] == "shapes-clip" and r["verified"] is True and 0 < r["clip_score"] <= 100
    assert "100 * max(cos, 0)" in r["convention"]
