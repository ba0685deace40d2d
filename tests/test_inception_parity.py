"""diffbench fid == torch-fidelity's and clean-fid's FID given the same (stand-in) Inception weights."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.inception_standins import torch_fidelity_standin, torchscript_standin


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for side, shift in (("a", 0), ("b", 40)):
        (root / side).mkdir()
        for i in range(24):
            base = rng.integers(0, 200, (8, 8, 3)).astype(np.uint8) + shift
            img = Image.fromarray(base).resize((48, 48), Image.NEAREST)
            img.save(root / side / f"{i:03d}.png")
    return root / "a", root / "b"


def test_torch_fidelity_mode_equals_torch_fidelity(cli, folders, tmp_path):
    import torch_fidelity

    weights = torch_fidelity_standin(tmp_path / "standin.pth")
    proc = cli("fid", str(folders[0]), str(folders[1]), "--weights", str(weights), "--allow-unverified-weights",
               "--format", "json")
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(proc.stdout)
    assert ours["verified"] is False and ours["mode"] == "torch-fidelity"
    ref = torch_fidelity.calculate_metrics(input1=str(folders[0]), input2=str(folders[1]), fid=True, cuda=False,
                                           feature_extractor_weights_path=str(weights), verbose=False, cache=False)
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)


def test_clean_mode_equals_clean_fid(cli, folders, tmp_path):
    import torch
    from cleanfid import fid as cleanfid
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    from diffbench.metrics.inception import _cleanfid_torchscript_inception

    weights = torchscript_standin(tmp_path / "inception-2015-12-05.pt")
    proc = cli("fid", str(folders[0]), str(folders[1]), "--mode", "clean", "--weights", str(weights),
               "--allow-unverified-weights", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(proc.stdout)
    model = _cleanfid_torchscript_inception(weights, "cpu", resize_inside=False)
    feats = [cleanfid.get_folder_features(str(f), model, num_workers=0, batch_size=8, device=torch.device("cpu"),
                                          mode="clean", verbose=False) for f in folders]
    # clean-fid's own frechet_distance (scipy sqrtm) fails on rank-deficient covariances (24 images,
    # 2048-d: "Imaginary component"), so its features go through torch-fidelity's eigenvalue formula.
    stats = [{"mu": f.astype(np.float64).mean(0), "sigma": np.cov(f.astype(np.float64), rowvar=False)} for f in feats]
    ref = fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"]
    assert ours["fid"] == pytest.approx(ref, rel=1e-4)
    # and the features themselves agree: same resizer, same network, same preprocessing
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.quality import extract

    det = build_detector("inception-v3", "clean", str(weights), allow_unverified=True)
    side = extract(folders[0], det, keep_features=True)
    np.testing.assert_allclose(side.pool, feats[0], rtol=1e-4, atol=1e-4)


def test_unverified_weights_are_refused_without_the_flag(cli, folders, tmp_path):
    weights = torch_fidelity_standin(tmp_path / "standin.pth")
    proc = cli("fid", str(folders[0]), str(folders[1]), "--weights", str(weights))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "not the published 6726825d" in proc.stderr and "--allow-unverified-weights" in proc.stderr
