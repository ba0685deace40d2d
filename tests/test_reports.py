"""Reports: the fit code reproduces the DiT paper's Table 4 scaling numbers."""

import numpy as np
import pytest

from diffbench.reports.fits import best_power_law, correlation, fit_power_law

# DiT Table 4 (docs/reference.md): paper Gflops, params (all), FID-50K at 400K steps
GFLOPS = [0.36, 1.41, 6.06, 1.42, 5.56, 23.01, 5.01, 19.7, 80.71, 7.39, 29.05, 118.64]
PARAMS = [33148160, 32945024, 32963360, 130881536, 130475648, 130512416, 458594816, 458053760, 458102816,
          675683072, 675074432, 675129632]
FID = [153.60, 100.41, 68.40, 122.74, 68.38, 43.47, 118.87, 45.64, 23.33, 106.41, 43.01, 19.47]


def test_dit_table4_correlation_with_log_gflops():
    c = correlation(np.log10(GFLOPS), FID)
    assert c.pearson == pytest.approx(-0.930, abs=5e-4)
    assert c.pearson_ci[0] < -0.93 < c.pearson_ci[1] < -0.7
    assert c.spearman < -0.9


def test_dit_table4_power_law():
    f = fit_power_law(GFLOPS, FID)
    assert f.b == pytest.approx(-0.365, abs=1e-3) and f.a == pytest.approx(138, abs=0.5)
    lo, hi = f.b_ci
    assert -0.50 < lo < -0.40 and -0.32 < hi < -0.22  # the paper's plot: about [-0.46, -0.27]
    assert f.loo_rmse > 0 and np.isfinite(f.aic)


def test_params_explain_far_less_than_gflops():
    assert correlation(np.log10(PARAMS), np.log10(FID)).pearson == pytest.approx(-0.50, abs=0.01)


def test_floored_power_law_recovers_a_floor():
    x = np.logspace(0, 3, 12)
    y = 50 * x**-0.5 + 5
    best, fits = best_power_law(x, y)
    assert best.floor and best.c == pytest.approx(5, rel=1e-3) and best.b == pytest.approx(-0.5, rel=1e-3)
    assert len(fits) == 2 and fits[1].aic < fits[0].aic


def test_fits_refuse_too_few_points():
    with pytest.raises(ValueError, match="at least"):
        fit_power_law([1, 2], [3, 4])


# --- report generation from records -----------------------------------------------------------------

import filecmp  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from diffbench.core import records  # noqa: E402
from diffbench.core.records import Record  # noqa: E402
from diffbench.reports.report import build  # noqa: E402

NAMES = ["DiT-S/8", "DiT-S/4", "DiT-S/2", "DiT-B/8", "DiT-B/4", "DiT-B/2", "DiT-L/8", "DiT-L/4", "DiT-L/2",
         "DiT-XL/8", "DiT-XL/4", "DiT-XL/2"]
PROV = {"git_commit": "abc", "git_dirty": False, "diffbench_version": "0.1.0", "torch_version": "2.14.1",
        "cuda_version": None, "driver_version": None, "python_version": "3.11.7", "device_name": "test-cpu",
        "host": "h", "precision": {"precision": "fp32"}, "seed": 0, "started_at": "t0", "recorded_at": "t1"}


def make_run(d: Path) -> Path:
    d.mkdir(parents=True)
    recs = []
    for i, name in enumerate(NAMES):
        cfg = {"model": {"label": name, "family": "dit", "preset": name,
                         "reference": {"params": PARAMS[i], "paper_gflops": GFLOPS[i], "paper_fid": FID[i]}},
               "batch_size": 1, "precision": "fp32", "device": "cpu"}
        cid = f"c{i:02d}"
        rows = [("params", PARAMS[i], "count"), ("gmacs", GFLOPS[i] * 0.9999, "GMAC"),
                ("latency_ms", 1.0 + GFLOPS[i], "ms"), ("throughput_img_s", 1000 / (1 + GFLOPS[i]), "images/s")]
        recs += [Record("run1", cid, "dit-table", cfg, m, float(v), u, case_size=len(rows) + 1, provenance=PROV)
                 for m, v, u in rows]
        recs.append(Record("run1", cid, "dit-table", cfg, "mfu", None, "1", status="unsupported",
                           error="MFU needs a GPU peak; this ran on CPU", case_size=len(rows) + 1, provenance=PROV))
    bad_cfg = {"model": {"label": "DiT-XL/2", "family": "dit", "preset": "DiT-XL/2"}, "batch_size": 256,
               "precision": "fp32", "device": "cpu"}
    recs.append(Record("run1", "c99", "dit-table", bad_cfg, "case", None, "", status="oom",
                       error="CUDA out of memory", case_size=1, provenance=PROV))
    records.append(d / "records.jsonl", recs)
    return d


def test_report_tables_fit_and_failures(tmp_path):
    run = make_run(tmp_path / "run")
    build(run, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## DiT grid: GMACs (measured)" in md and "## DiT grid: FID-50K (paper)" in md
    assert "r(log10 GMACs, paper_fid) = -0.930" in md  # the fit on measured GMACs and the paper's FIDs
    assert "Quality improves with compute" in md
    assert "| DiT-XL/2 | 256 | fp32 | oom | CUDA out of memory |" in md
    assert "MFU (%): MFU needs a GPU peak; this ran on CPU" in md
    html_text = (tmp_path / "out" / "report.html").read_text()
    assert html_text.count("data:image/png;base64,") >= 3  # quality vs GMACs, Pareto, throughput, memory
    assert (tmp_path / "out" / "plots" / "quality_vs_gmacs.svg").is_file()
    [grid_csv] = (tmp_path / "out").glob("*_dit_grid__gmacs__measured.csv")
    grid = grid_csv.read_text().splitlines()
    assert grid[0] == "model,/8,/4,/2" and grid[-1].startswith("DiT-XL,")


def test_report_of_a_copied_run_is_byte_identical(tmp_path):
    run = make_run(tmp_path / "run")
    shutil.copytree(run, tmp_path / "copy")
    build(run, tmp_path / "a")
    build(tmp_path / "copy", tmp_path / "b")
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    files = [f for f in (tmp_path / "a").rglob("*") if f.is_file()]
    assert len(files) > 10
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f
    assert not cmp.left_only and not cmp.right_only


def test_report_cli_on_torn_and_bad_runs(cli, tmp_path):
    run = make_run(tmp_path / "run")
    with open(run / "records.jsonl", "a") as f:
        f.write('{"schema_version": 1, "run_id": "run1", "case_id"')  # a writer killed mid-line
    proc = cli("report", str(run), "--format", "md")
    assert proc.returncode == 0, proc.stderr
    assert "torn last line" in proc.stderr and (run / "report" / "report.md").is_file()
    assert not (run / "report" / "report.html").exists()

    def one_line(p, fragment):
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and fragment in p.stderr, p.stderr

    one_line(cli("report", str(tmp_path / "missing")), "no such run directory")
    (tmp_path / "empty").mkdir()
    one_line(cli("report", str(tmp_path / "empty")), "holds no records.jsonl")
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "records.jsonl").write_text("")
    one_line(cli("report", str(tmp_path / "zero")), "no records")
    newer = make_run(tmp_path / "newer")
    d = json.loads((newer / "records.jsonl").read_text().splitlines()[0])
    d["schema_version"] = 99
    with open(newer / "records.jsonl", "a") as f:
        f.write(json.dumps(d) + "\n")
    one_line(cli("report", str(newer)), "newer than this diffbench")
    one_line(cli("report", str(run), "--format", "pdf"), "expected a comma-separated subset")


def test_html_report_renders_in_headless_chromium_with_plots(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import check_report_html as chk

    if chk.chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    run = make_run(tmp_path / "run")
    build(run, tmp_path / "out", ("html",))
    png = tmp_path / "out" / "report-screenshot.png"
    chk.screenshot(tmp_path / "out" / "report.html", png)
    blue, ink = chk.plot_pixels(png)
    assert blue > 500 and ink > 0.02, (blue, ink)
    # a page with the images stripped out has no plot colour: the check can fail
    (tmp_path / "out" / "bare.html").write_text("<html><body><h1>diffbench report</h1></body></html>")
    chk.screenshot(tmp_path / "out" / "bare.html", tmp_path / "bare.png")
    assert chk.plot_pixels(tmp_path / "bare.png")[0] < 50


# --- scaling within families, with the points' own uncertainty -------------------------------------------

def test_family_fit_uses_the_points_uncertainty():
    from diffbench.reports.fits import fit_family, fixed_effects_slope

    x = [1.0, 2.0, 4.0]
    clear = fit_family("dit", x, [300.0, 250.0, 210.0], [5.0, 5.0, 5.0])
    assert clear.monotone and clear.supports and clear.b_ci[1] < 0 < -clear.b
    noisy = fit_family("vit", x, [300.0, 290.0, 285.0], [30.0, 30.0, 30.0])  # differences within the noise
    assert noisy.monotone and not noisy.supports and noisy.b_ci[0] < 0 < noisy.b_ci[1]
    bumpy = fit_family("uvit", x, [300.0, 310.0, 200.0], [5.0, 5.0, 5.0])
    assert not bumpy.monotone and "not at every step" in bumpy.sentence("fid", "lower")
    # scatter about the line beyond the points' noise widens the interval (Birge ratio): the quick suite's U-ViT
    # (KID 174.7, 138.7, 162.3, about 4% each) passed as scaling on the points' noise alone
    uvit = fit_family("uvit", x, [174.7, 138.7, 162.3], [7.0, 5.5, 6.5])
    assert uvit.widened > 3 and not uvit.supports and uvit.b_ci[0] < 0 < uvit.b_ci[1]
    assert "widened" in uvit.sentence("kid", "lower")
    assert clear.widened == pytest.approx(1.0) and "own uncertainty" in clear.sentence("fid", "lower")
    assert fit_family("two", [1.0, 2.0], [300.0, 250.0], [5.0, 5.0]).widened == 1.0  # no degree of freedom left
    # one shared exponent with an offset per family: recovers -0.3 where pooling without offsets would not
    xs = np.array([1, 2, 4, 1, 2, 4], float)
    ys = np.concatenate([100 * xs[:3] ** -0.3, 400 * xs[3:] ** -0.3])
    b, (lo, hi) = fixed_effects_slope(xs, ys, ["a"] * 3 + ["b"] * 3, np.full(6, 1e-3) * ys)
    assert b == pytest.approx(-0.3, abs=1e-6) and lo < -0.29 and hi > -0.31


def test_intervals_cover_and_kid_is_unbiased_at_small_n():
    from diffbench.metrics.intervals import fid_interval, kid_interval

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2000, 8))
    same = rng.normal(size=(256, 8))
    shifted = rng.normal(0.5, 1.0, size=(256, 8))
    f_same = fid_interval(same, ref.mean(0), np.cov(ref, rowvar=False))
    f_shift = fid_interval(shifted, ref.mean(0), np.cov(ref, rowvar=False))
    assert f_same.lo <= f_same.value <= f_same.hi and f_shift.lo > f_same.hi  # a real shift is outside the noise
    k = kid_interval(same, ref)
    assert k.lo < 0 < k.hi or abs(k.value) < 3 * k.se  # no difference: KID's interval holds 0 (unbiased)
    assert kid_interval(shifted, ref).lo > 0


def test_quality_along_training_draws_dits_figure_9(tmp_path, cli):
    """eval_every scores the model during training: one run gives each size's curve against training compute."""
    suite = tmp_path / "curve.toml"
    suite.write_text("""
name = "curve"
[defaults]
batch_sizes = [2]
measure = ["counts", "train", "quality"]
train_steps = 6
train_batch = 8
eval_every = 2
samples = 8
sample_steps = 1
[[sweeps]]
families = ["dit"]
params = ["0.2M", "0.4M", "0.8M"]
inputs = ["3x16x16"]
classes = 10
tolerance = 0.05
""")
    out = tmp_path / "run"
    proc = cli("run", str(suite), "--out", str(out), "--no-progress", "--devices", "cpu,cpu", timeout=600)
    assert proc.returncode == 0, proc.stderr
    fids = [r for r in records.read(out / "records.jsonl").records if r.metric == "fid[digits]"]
    assert len(fids) == 3
    for r in fids:
        curve = r.extra["curve"]
        assert [p["step"] for p in curve] == [2, 4, 6] and curve[-1]["value"] == r.value
        flops = [p["train_flops"] for p in curve]
        assert flops[0] > 0 and flops == sorted(flops) and flops[2] == pytest.approx(3 * flops[0])
        assert all(len(p["ci95"]) == 2 for p in curve)
    seconds = {r.metric: r.value for r in records.read(out / "records.jsonl").records if r.case_id == fids[0].case_id}
    assert seconds["phase_seconds[evaluate]"] > 0 and seconds["train_seconds"] > 0
    assert cli("report", str(out)).returncode == 0
    assert (out / "report" / "plots" / "quality_vs_training_compute.png").is_file()
    md = (out / "report" / "report.md").read_text()
    assert "Scaling by family" in md and "95% interval" in md
    assert "condition gain (small -> large)" in md  # class-conditional backbones record how they use their labels
    gains = [r for r in records.read(out / "records.jsonl").records if r.metric == "cond_gain"]
    assert len(gains) == 3 and all(g.extra["ci95"][0] <= g.value <= g.extra["ci95"][1] for g in gains)
    # the best FID beside the floor at its own sample count, whichever metric (FID or KID) the fit chose
    import re

    value, label, floor = re.search(r"Best fid\[digits\]: ([0-9.e+]+) \(([^)]+)\); as many real images against the "
                                    r"reference score ([0-9.e+]+)", md).groups()
    recs = records.read(out / "records.jsonl").records
    best = min(fids, key=lambda r: r.value)
    assert float(value) == pytest.approx(best.value, rel=1e-3) and label.startswith("dit@")
    assert float(floor) == pytest.approx(next(r.value for r in recs if r.case_id == best.case_id and
                                              r.metric == "fid_real[digits]"), rel=1e-3)


def test_a_family_that_has_not_learned_its_condition_is_named():
    """A family without scaling whose condition gain stays under a quarter of the best family's is said to differ
    in how far training got; one that scales, or uses its condition, is not."""
    import pandas as pd

    from diffbench.reports.fits import FamilyFit
    from diffbench.reports.report import _unlearned_conditions

    df = pd.DataFrame({"family": ["dit"] * 3 + ["vit"] * 3 + ["uvit"] * 3,
                       "cond_gain": [0.20, 0.23, 0.24, 0.010, 0.012, 0.011, 0.15, 0.18, 0.02]})
    fams = [FamilyFit("dit", -0.2, (-0.3, -0.1), 3, True, True), FamilyFit("vit", 0.0, (-0.1, 0.1), 3, False, False),
            FamilyFit("uvit", 0.0, (-0.3, 0.2), 3, False, False)]
    text = _unlearned_conditions(df, fams)
    assert "vit has barely learned to use its condition" in text and "1.2%, against 24.0% for dit" in text
    assert "uvit has" not in text and "dit has" not in text.replace("vit has", "")
    assert _unlearned_conditions(df.drop(columns="cond_gain"), fams) == ""
