"""The reference-feature cache: three systems scored against one reference extract its features once; a
changed reference is never served stale; entries hold exactly what the detector gave."""

import json
import os

import numpy as np
import pytest

SUITE = """
name = "three"
[defaults]
batch_sizes = [2]
warmup = 0
repeats = 1
measure = ["train", "quality"]
train_steps = 2
train_batch = 4
samples = 16
sample_steps = 2

[[sweeps]]
families = ["dit", "vit", "uvit"]
params = ["0.3M"]
inputs = ["3x16x16"]
classes = 10
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "reference-stats"


def test_three_systems_extract_their_shared_reference_once(tmp_path, cache):
    import diffbench

    suite = tmp_path / "three.toml"
    suite.write_text(SUITE)
    run = diffbench.run(str(suite), tmp_path / "run")
    assert run.statuses == {"ok": 3}
    fids = run.records[run.records["metric"].str.startswith("fid[")]
    extras = [json.loads(line)["extra"]["reference_cache"] for line in (tmp_path / "run" / "records.jsonl")
              .read_text().splitlines() if json.loads(line)["metric"].startswith("fid[")]
    assert len(fids) == 3 and sorted(e["hit"] for e in extras) == [False, True, True]  # extracted once, hit twice
    assert len({e["key"] for e in extras}) == 1 and len(list(cache.glob("*.npz"))) == 1


def test_a_changed_reference_file_is_not_served_stale(tmp_path, cache):
    from diffbench.diffusion import datasets
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.quality import extract
    from diffbench.metrics.refcache import cached_extract, entries

    det = build_detector("digits")
    images = datasets.digits(8).images
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=images[:200].permute(0, 2, 3, 1).numpy())
    first = cached_extract(ref, det)
    again = cached_extract(ref, det)
    assert not first.hit and again.hit and first.key == again.key
    direct = extract(ref, det, keep_features=True)
    assert np.array_equal(again.side.pool, direct.pool)  # exactly the detector's features
    assert np.array_equal(again.side.stats.sigma, direct.stats.sigma)
    np.savez(ref, arr_0=images[200:400].permute(0, 2, 3, 1).numpy())  # same name, other images
    changed = cached_extract(ref, det)
    assert not changed.hit and changed.key != first.key
    assert not np.array_equal(changed.side.stats.mu, first.side.stats.mu)
    assert len(entries()) == 2
    os.environ["DIFFBENCH_CACHE"] = "off"
    assert not cached_extract(ref, det).hit


def test_a_folder_is_keyed_by_every_file_and_cache_cli_lists_and_clears(tmp_path, cache, cli):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    out = cli("stats", str(folder), "-o", str(tmp_path / "s.npz"), "--detector", "digits")
    assert out.returncode == 0, out.stderr
    listed = cli("cache", "list", "--format", "json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["images"] == 12 and rows[0]["detector"] == "digits"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "3.png")  # one pixel file changed
    assert cli("stats", str(folder), "-o", str(tmp_path / "s2.npz"), "--detector", "digits").returncode == 0
    assert len(json.loads(cli("cache", "list", "--format", "json").stdout)) == 2
    assert "removed 2 entries" in cli("cache", "clear").stdout
    assert "0 entries" in cli("cache", "list").stdout
    a, b = np.load(tmp_path / "s.npz"), np.load(tmp_path / "s2.npz")
    assert not np.array_equal(a["mu"], b["mu"])


def test_cache_clear_removes_only_what_diffbench_wrote_and_follows_no_link(tmp_path, cache):
    """A user's own .npz beside the entries, a link to a file outside, and a cache folder that is itself a link
    are left alone (issue #30)."""
    from diffbench.metrics import refcache

    folder = refcache.cache_dir()
    assert folder is not None
    folder.mkdir(parents=True)
    ours = folder / f"{'a' * 32}.npz"
    ours.write_bytes(b"entry")
    mine = folder / "my_reference.npz"
    mine.write_bytes(b"user data")
    outside = tmp_path / "precious.npz"
    outside.write_bytes(b"outside the cache")
    (folder / f"{'b' * 32}.npz").symlink_to(outside)
    assert [r["key"] for r in refcache.entries()] == ["a" * 32]
    assert refcache.clear() == 1
    assert not ours.exists() and mine.read_bytes() == b"user data" and outside.read_bytes() == b"outside the cache"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{'c' * 32}.npz").write_bytes(b"x")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.symlink_to(elsewhere)  # the cache folder leads out of the cache: nothing there is ours to delete
    assert refcache.entries() == [] and refcache.clear() == 0 and (elsewhere / f"{'c' * 32}.npz").exists()


def test_a_wrong_but_well_formed_entry_is_ignored_and_extracted_again(tmp_path, cache, caplog):
    """An entry copied under another reference's key (well formed, finite) was served: FID against the wrong
    reference with no warning. It is checked against its key, its image count, its sums and its covariance."""
    import logging

    from diffbench.diffusion import datasets
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.refcache import cached_extract

    logging.getLogger("diffbench").addHandler(caplog.handler)  # the CLI's handler may stop propagation
    det = build_detector("digits")
    images = datasets.digits(8).images
    a, b = images[:150], images[150:300]
    first = cached_extract(a, det)
    other = cached_extract(b, det)
    assert not first.hit and not other.hit
    (cache / f"{first.key}.npz").write_bytes((cache / f"{other.key}.npz").read_bytes())  # B's entry under A's key
    again = cached_extract(a, det)
    assert not again.hit and "names another reference or detector than its key" in caplog.text
    assert np.array_equal(again.side.pool, first.side.pool)  # A's features, extracted again
    assert cached_extract(a, det).hit  # and stored right this time

    # a PSD violation under the right key and metadata: a covariance with a negative direction
    path = cache / f"{first.key}.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: np.array(f[k]) for k in f.files}
    arrays.pop("pool")
    arrays["sum_outer"] = arrays["sum_outer"] - 10 * arrays["count"] * np.eye(len(arrays["sum"]))
    np.savez(path, **arrays)
    caplog.clear()
    fresh = cached_extract(a, det, keep_features=False)
    assert not fresh.hit and "not positive semi-definite" in caplog.text
    logging.getLogger("diffbench").removeHandler(caplog.handler)


def test_damaged_entries_are_listed_as_damaged_and_ignored_by_fid(tmp_path, cache, cli):
    """One entry of each damaged kind: a 2-D count, metadata that is a list, a truncated file. 'cache list' says
    which and exits 0; fid with that cache equals fid with an empty one."""
    from diffbench.diffusion import datasets
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.refcache import cached_extract

    images = datasets.digits(8).images
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, arr_0=images[:120].permute(0, 2, 3, 1).numpy())
    np.savez(b, arr_0=images[120:240].permute(0, 2, 3, 1).numpy())
    clean = cli("fid", str(a), str(b), "--detector", "digits", "--format", "json")
    assert clean.returncode == 0, clean.stderr
    det = build_detector("digits")
    keys = [cached_extract(src, det).key for src in (a, b, images[:50])]
    paths = [cache / f"{k}.npz" for k in keys]
    with np.load(paths[0], allow_pickle=False) as f:
        arrays = {k: np.array(f[k]) for k in f.files}
    np.savez(paths[0], **{**arrays, "count": np.array([[arrays["count"]]])})  # a 2-D count
    with np.load(paths[1], allow_pickle=False) as f:
        arrays = {k: np.array(f[k]) for k in f.files}
    np.savez(paths[1], **{**arrays, "meta": np.array(json.dumps(["a", "list"]))})  # metadata that is a list
    paths[2].write_bytes(paths[2].read_bytes()[:300])  # truncated
    listed = cli("cache", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    status = {r["key"]: r["status"] for r in json.loads(listed.stdout)}
    assert status[keys[0]] == "damaged: its image count is not a whole number"
    assert status[keys[1]] == "damaged: metadata is not an object"
    assert status[keys[2]].startswith("damaged: unreadable")
    again = cli("fid", str(a), str(b), "--detector", "digits", "--format", "json")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert json.loads(again.stdout)["fid"] == json.loads(clean.stdout)["fid"]
