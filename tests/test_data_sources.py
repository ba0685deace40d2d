"""The data-source contract (diffusion/sources.py) and datasets on the user's disk (diffusion/folders.py)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from diffbench.core.errors import BadInputError
from diffbench.diffusion import folders
from diffbench.diffusion.resolve import dataset_sha256, open_source
from tests.data_trees import captioned, class_tree


def test_class_tree_labels_from_sorted_folder_names(tmp_path):
    class_tree(tmp_path / "d", classes=3, per_class=4)
    src = open_source(str(tmp_path / "d"), 16)
    assert (len(src), src.cond, src.classes, src.shape) == (12, "class", 3, (3, 16, 16))
    b = src.fetch([0, 4, 11])
    assert b.x.dtype == torch.uint8 and b.x.shape == (3, 3, 16, 16)
    assert b.conds.tolist() == [0, 1, 2]


def test_centre_crop_is_adm_preprocessing():
    """Box-halved while the short side is >= 2x the resolution, bicubic to it, centre crop: a 64x40 image at 16 px
    is halved once (32x20), scaled by 16/20 to 26x16 and cropped 5 px from the left."""
    im = Image.fromarray(np.arange(40 * 64 * 3, dtype=np.uint8).reshape(40, 64, 3))
    out = folders.centre_crop(im, 16)
    half = im.resize((32, 20), resample=Image.Resampling.BOX)
    scaled = half.resize((26, 16), resample=Image.Resampling.BICUBIC)
    assert out.size == (16, 16)
    assert np.array_equal(np.asarray(out), np.asarray(scaled)[:, 5:21])


def test_flip_mirrors_the_decoded_image(tmp_path):
    class_tree(tmp_path / "d", classes=1, per_class=2)
    src = open_source(str(tmp_path / "d"), 16)
    plain, flipped = src.fetch([1]).x, src.fetch([1], [True]).x
    assert torch.equal(plain.flip(-1), flipped) and not torch.equal(plain, flipped)


def test_embedded_sources_never_flip():
    src = open_source("digits", 16)
    assert not src.flippable
    assert torch.equal(src.fetch([3], [True]).x, src.fetch([3]).x)


def test_captioned_folder(tmp_path):
    captioned(tmp_path / "c", ["a red circle", "a blue square on the left"][:1] * 3)
    src = open_source(str(tmp_path / "c"), 16)
    assert src.cond == "text" and len(src) == 3
    b = src.fetch([0, 2])
    assert b.captions == ["a red circle"] * 2 and b.conds.shape[0] == 2


def test_identity_is_content_not_path(tmp_path):
    class_tree(tmp_path / "a", per_class=3)
    class_tree(tmp_path / "b", per_class=3)
    for src, dst in zip(sorted((tmp_path / "a").rglob("*.png")), sorted((tmp_path / "b").rglob("*.png")), strict=True):
        os.utime(dst, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))
    assert dataset_sha256(str(tmp_path / "a")) == dataset_sha256(str(tmp_path / "b"))
    touched = next((tmp_path / "b").rglob("*.png"))
    os.utime(touched, ns=(1, 10**18))
    assert dataset_sha256(str(tmp_path / "a")) != dataset_sha256(str(tmp_path / "b"))


# --- hostile folders: each one line (BadInputError), or skipped and counted with skip_bad --------------------


def _truncated_jpeg(root):
    class_tree(root, classes=2, per_class=2)
    path = root / "class0" / "bad.jpg"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:200])
    return "bad.jpg"


def _empty_class(root):
    class_tree(root, classes=2, per_class=2)
    (root / "class9").mkdir()
    return "empty class folder"


def _symlink_loop(root):
    class_tree(root, classes=2, per_class=2)
    os.symlink(root / "class0", root / "class0" / "loop")
    return "symlink loop"


def _missing_file_name(root):
    captioned(root, ["a red circle"] * 2)
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"text": "a red circle"}) + "\n")
    return "file_name"


@pytest.mark.parametrize("make", [_truncated_jpeg, _empty_class, _symlink_loop, _missing_file_name])
def test_bad_folder_is_one_line_or_skipped_and_counted(tmp_path, make):
    root = tmp_path / "d"
    needle = make(root)
    with pytest.raises(BadInputError) as e:
        src = open_source(str(root), 16)
        src.fetch(range(len(src)))  # a truncated image is found when it is decoded
    assert needle in str(e.value) and "skip_bad" in str(e.value) and "\n" not in str(e.value)
    src = open_source(str(root), 16, skip_bad=True)
    src.fetch(range(len(src)))
    assert len(src.listing.skipped) + len(src.bad) == 1


def test_alpha_and_16_bit_pngs_are_converted(tmp_path):
    root = class_tree(tmp_path / "d", classes=1, per_class=1)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(root / "class0" / "alpha.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(root / "class0" / "deep.png")
    src = open_source(str(root), 16)
    x = src.fetch(range(len(src))).x
    names = src.listing.files
    assert x[names.index("class0/alpha.png"), 0].float().mean() == 200  # colour kept, alpha dropped
    assert x[names.index("class0/deep.png")].min() == 255  # 16-bit white is 8-bit white, not clipped noise


def test_missing_dataset_is_one_line(tmp_path):
    with pytest.raises(BadInputError, match="no such folder"):
        open_source(str(tmp_path / "nope"), 16)
