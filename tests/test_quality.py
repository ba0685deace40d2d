"""Quality metrics: Frechet parity with the reference libraries, mergeable statistics, embedded sanity."""

import inspect

import numpy as np
import pytest
import torch

from diffbench.diffusion import datasets
from diffbench.metrics.detectors import build_detector
from diffbench.metrics.frechet import frechet_distance
from diffbench.metrics.quality import compare, extract
from diffbench.metrics.stats import FeatureStats


def gaussian_features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift + rng.normal(size=d) * 0.1


@pytest.fixture(scope="module")
def stats_pair():
    a, b = gaussian_features(3000, 256, 0), gaussian_features(2500, 256, 1, shift=0.3)
    return (a.mean(0), np.cov(a, rowvar=False)), (b.mean(0), np.cov(b, rowvar=False))


def _sqrtm_has_disp() -> bool:
    from scipy import linalg

    return "disp" in inspect.signature(linalg.sqrtm).parameters


needs_disp = pytest.mark.skipif(not _sqrtm_has_disp(), reason="SciPy >= 1.18 removed sqrtm(disp=...), "
                                "which clean-fid and pytorch-fid call; install scipy<1.18 to run this reference")


@needs_disp
def test_frechet_matches_clean_fid(stats_pair):
    from cleanfid.fid import frechet_distance as ref

    (m1, s1), (m2, s2) = stats_pair
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref(m1, s1, m2, s2), rel=1e-9)


@needs_disp
def test_frechet_matches_pytorch_fid(stats_pair):
    from pytorch_fid.fid_score import calculate_frechet_distance as ref

    (m1, s1), (m2, s2) = stats_pair
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref(m1, s1, m2, s2), rel=1e-9)


def test_frechet_matches_torchmetrics(stats_pair):
    from torchmetrics.image.fid import _compute_fid as ref

    (m1, s1), (m2, s2) = stats_pair
    t = [torch.from_numpy(v) for v in (m1, s1, m2, s2)]
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(float(ref(*t)), rel=1e-9)


def test_frechet_invariants(stats_pair):
    (m1, s1), (m2, s2) = stats_pair
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-10)
    assert frechet_distance(m1, s1, m1 + 1, s1) == pytest.approx(len(m1), rel=1e-9)  # pure mean shift


def test_merged_shards_equal_single_pass():
    x = gaussian_features(4000, 64, 3) * 10 + 100
    whole = FeatureStats(64).update(x)
    shards = [FeatureStats(64).update(part) for part in np.array_split(x, 4)]
    merged = shards[0].merge(shards[1]).merge(shards[2].merge(shards[3]))
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.mu, whole.mu, rtol=1e-12)
    np.testing.assert_allclose(merged.sigma, whole.sigma, rtol=1e-12, atol=1e-12 * np.abs(whole.sigma).max())
    np.testing.assert_allclose(whole.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_stats_file_round_trip_and_adm_style_files(tmp_path):
    x = gaussian_features(500, 16, 4)
    s = FeatureStats(16).update(x)
    s.save(tmp_path / "s.npz", detector="digits")
    back = FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, s.mu)
    assert back.count == 500 and back.meta == {"detector": "digits"}
    np.savez(tmp_path / "adm.npz", mu=s.mu, sigma=s.sigma)  # ADM / clean-fid reference files: mu, sigma only
    ref = FeatureStats.load(tmp_path / "adm.npz")
    np.testing.assert_array_equal(ref.sigma, s.sigma)


@pytest.fixture(scope="module")
def digits_detector():
    return build_detector("digits")


def test_embedded_fid_separates_digits_from_noise(digits_detector):
    d = datasets.digits(32).images
    perm = torch.randperm(len(d), generator=torch.Generator().manual_seed(0))
    a, b = d[perm[:800]], d[perm[800:1600]]
    noise = torch.randint(0, 256, (800, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    half = compare(extract(a, digits_detector), extract(b, digits_detector))["fid"]
    vs_noise = compare(extract(a, digits_detector), extract(noise, digits_detector))["fid"]
    assert half * 5 < vs_noise, (half, vs_noise)
    # FID grows monotonically with added noise
    ref = extract(b, digits_detector)
    fids = []
    for sigma in (0.0, 0.1, 0.2, 0.35, 0.5, 0.8):
        g = torch.Generator().manual_seed(2)
        noisy = (a.float() / 255 + sigma * torch.randn(a.shape, generator=g)).clamp(0, 1)
        fids.append(compare(extract(noisy, digits_detector, value_range=(0, 1)), ref)["fid"])
    assert all(x < y for x, y in zip(fids, fids[1:], strict=False)), fids


def test_kid_is_seeded_and_prc_in_range(digits_detector):
    d = datasets.digits(32).images
    a, b = extract(d[:600], digits_detector, keep_features=True), extract(d[600:1200], digits_detector, True)
    r1, r2 = compare(a, b, kid=True, prc=True, seed=3), compare(a, b, kid=True, prc=True, seed=3)
    assert r1["kid"] == r2["kid"] and 0 <= r1["precision"] <= 1 and 0 <= r1["recall"] <= 1
    assert r1["precision"] > 0.5 and r1["recall"] > 0.5


def test_inception_score_of_uniform_and_confident_logits():
    from diffbench.metrics.isc import inception_score

    uniform = np.zeros((100, 10))
    assert inception_score(uniform, splits=5)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(100) % 10] * 50
    assert inception_score(confident, splits=5)[0] == pytest.approx(10.0, rel=1e-6)


def test_embedded_clip_score_prefers_matching_captions():
    from diffbench.metrics import clip_score

    model = clip_score.load("embedded")
    held_out = datasets.shapes(300, 32, seed=12345)  # seeds the detector never saw
    matched, _ = clip_score.clip_score(model, held_out.images, held_out.captions)
    shuffled_caps = [held_out.captions[(i + 7) % 300] for i in range(300)]
    shuffled, _ = clip_score.clip_score(model, held_out.images, shuffled_caps)
    assert matched > shuffled + 10, (matched, shuffled)


def test_dataset_words_are_in_the_clip_vocabulary():
    from diffbench.metrics.captions import VOCAB

    words = {w for c in datasets.shapes(200, 16).captions for w in c.split()}
    assert words <= set(VOCAB)


def test_shapes_are_deterministic_by_index():
    a = datasets.shapes(10, 24, seed=5)
    b = datasets.shapes(4, 24, seed=5, start=6)
    assert torch.equal(a.images[6:], b.images) and a.captions[6:] == b.captions


def test_embedded_weights_are_small_and_match_their_hashes():
    from diffbench.metrics.embedded import ASSETS, expected_hashes
    from diffbench.metrics.weights import sha256_of

    hashes = expected_hashes()
    assert set(hashes) == {"digits.safetensors", "shapes.safetensors", "shapes-clip.safetensors"}
    assert sum((ASSETS / f).stat().st_size for f in hashes) < 5e6
    for f, h in hashes.items():
        assert sha256_of(ASSETS / f) == h


def test_open_clip_checkpoint_loads_offline_and_scores(tmp_path):
    """Plumbing with a randomly initialised ViT-B-32 saved locally (scores not meaningful)."""
    import open_clip

    from diffbench.metrics import clip_score

    torch.manual_seed(0)
    net = open_clip.create_model("ViT-B-32", pretrained=None)
    torch.save(net.state_dict(), tmp_path / "vit-b-32-random.pt")
    model = clip_score.load(str(tmp_path / "vit-b-32-random.pt"), arch="ViT-B-32")
    s = datasets.shapes(4, 32, seed=1)
    score, per = clip_score.clip_score(model, s.images, s.captions)
    assert per.shape == (4,) and 0 <= score <= 100 and model.verified is False
    # the formula is torchmetrics': 100 * max(cos, 0) of unit embeddings
    cos = (model.embed_images(s.images) * model.embed_texts(s.captions)).sum(-1)
    np.testing.assert_allclose(per, (100 * cos.clamp(min=0)).double().numpy(), rtol=1e-6)


def test_a_negative_frechet_distance_is_refused_not_reported_as_zero():
    """Statistics whose covariance is not PSD (a damaged cache entry) cannot give FID 0.0 (issue #30)."""
    import numpy as np

    from diffbench.core.errors import BadInputError
    from diffbench.metrics.frechet import frechet_distance

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)  # round-off stays a 0
    broken = sigma - 3 * np.eye(8)  # negative eigenvalues: no set of images has this covariance
    with pytest.raises(BadInputError, match="negative"):
        frechet_distance(mu, broken, mu, sigma)
    nan_sigma = sigma.copy()
    nan_sigma[0, 1] = np.nan
    for bad in ((np.full(8, np.nan), sigma, mu, sigma), (mu, nan_sigma, mu, sigma), (mu, sigma, mu, nan_sigma)):
        with pytest.raises(BadInputError, match="NaN or infinite"):  # NaN passes a "< 0" check; LAPACK fails on it
            frechet_distance(*bad)
