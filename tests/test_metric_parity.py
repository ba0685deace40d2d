"""KID, IS, sFID and precision/recall equal torch-fidelity's feature-level functions on identical features
(1e-6 relative); FID's parity is in test_quality.py and test_inception_parity.py."""

import numpy as np
import pytest
import torch

tf_kid = pytest.importorskip("torch_fidelity.metric_kid")
from torch_fidelity import metric_fid, metric_isc, metric_prc  # noqa: E402

from diffbench.metrics.frechet import frechet_distance  # noqa: E402
from diffbench.metrics.isc import inception_score  # noqa: E402
from diffbench.metrics.kid import kernel_inception_distance  # noqa: E402
from diffbench.metrics.prc import precision_recall  # noqa: E402
from diffbench.metrics.stats import FeatureStats  # noqa: E402


def features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, size=(n, d)) * rng.uniform(0.5, 2.0, size=d)


def test_kid_equals_torch_fidelity():
    a, b = features(0, 300, 64), features(1, 250, 64, 0.3)
    ours = kernel_inception_distance(a, b, subsets=20, subset_size=200, seed=2020)
    theirs = tf_kid.kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=20,
                                           kid_subset_size=200, rng_seed=2020, verbose=False)
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    assert ours[1] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-6)


@pytest.mark.parametrize("n", [250, 253])  # 253: the splits are uneven, where array_split would differ
def test_inception_score_equals_torch_fidelity(n):
    logits = features(2, n, 1008) * 3
    for shuffle in (False, True):
        ours = inception_score(logits, splits=10, shuffle=shuffle, seed=2020)
        theirs = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=shuffle,
                                                   rng_seed=2020)
        assert ours[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-6), shuffle
        assert ours[1] == pytest.approx(theirs["inception_score_std"], rel=1e-6), shuffle


def test_sfid_equals_torch_fidelity_on_spatial_statistics():
    """sFID is the Frechet distance of spatial features' statistics: our running sums against torch-fidelity's
    statistics of the same features."""
    a, b = features(3, 400, 96), features(4, 350, 96, 0.2)
    sa, sb = FeatureStats(96).update(a[:150]).update(a[150:]), FeatureStats(96).update(b)
    ours = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    ta, tb = (metric_fid.fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b))
    theirs = metric_fid.fid_statistics_to_metric(ta, tb, verbose=False)["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_precision_recall_equal_torch_fidelity():
    real, fake = features(5, 300, 32), features(6, 280, 32, 0.4)
    precision, recall = precision_recall(real, fake, k=3)
    for fn in (metric_prc.calculate_precision_recall_full, metric_prc.calculate_precision_recall_part):
        p, r = fn(torch.from_numpy(fake), torch.from_numpy(real), neighborhood=3, batch_size=100)
        assert precision == pytest.approx(p, rel=1e-6) and recall == pytest.approx(r, rel=1e-6)
    assert 0 < precision < 1 and 0 < recall < 1  # a case where both matter, not a trivial 0 or 1


def test_kid_from_precomputed_kernels_equals_the_per_subset_loop(monkeypatch):
    """The same subsets, summed from the full kernels through selection rows or recomputed per subset."""
    from diffbench.metrics import kid

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(120, 16)), rng.normal(size=(300, 16)) + 0.2
    fast = kid.kernel_inception_distance(a, b, subsets=30, subset_size=100, seed=5)
    monkeypatch.setattr(kid, "PRECOMPUTE_MAX", 0)
    slow = kid.kernel_inception_distance(a, b, subsets=30, subset_size=100, seed=5)
    assert fast == pytest.approx(slow, rel=1e-12)
