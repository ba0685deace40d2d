"""The report answers its question first: a summary naming the best system at matched size with its interval, a
head-to-head table of differences with intervals (a two-model run included), a headline metric that a suite fixes
and that does not flip with the run's noise, and tables split by concern that fit the page."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import diffbench
from diffbench.core import records
from diffbench.core.records import Record
from diffbench.metrics.specs import MetricKey
from diffbench.reports.report import build

PROV = {"git_commit": "abc", "git_dirty": False, "diffbench_version": "0.1.0", "torch_version": "2.14.1",
        "python_version": "3.11.7", "device_name": "test-cpu", "host": "h", "seed": 0}


def system(label, family, params, target, fid, fid_se, kid=None, kid_se=None, steps=100):
    """The records of one trained backbone case: counts, speed, quality with intervals, training."""
    cfg = {"model": {"label": label, "family": family, "preset": None, "target": {"params": target},
                     "input": [1, 8, 8]}, "batch_size": 32, "precision": "fp32", "device": "cpu", "train_batch": 16}
    rows = [("params", params, "count", {}), ("gmacs", params / 1e8, "GMAC", {}),
            ("latency_ms", params / 1e5, "ms", {}), ("latency_per_image_ms", params / 32e5, "ms", {}),
            ("train_steps", steps, "steps", {}),
            ("train_flops", 6.0 * params * steps * 16, "FLOP", {}),
            ("fid[digits]", fid, "1", {"detector": "digits", "se": fid_se,
                                        "ci95": [fid - 1.96 * fid_se, fid + 1.96 * fid_se]})]
    if kid is not None:
        rows.append(("kid[digits]", kid, "1", {"detector": "digits", "se": kid_se,
                                                "ci95": [kid - 1.96 * kid_se, kid + 1.96 * kid_se]}))
    return [Record("run1", label.replace("@", "-"), "mine", cfg, m, float(v), u, extra=x, case_size=len(rows),
                   provenance=PROV) for m, v, u, x in rows]


def write_run(d: Path, recs, report_choice=None) -> Path:
    d.mkdir(parents=True)
    records.append(d / "records.jsonl", recs)
    if report_choice is not None:
        (d / "suite.resolved.json").write_text(json.dumps({"suite": "mine", "report": report_choice, "cases": []}))
    return d


def test_a_two_model_run_opens_on_its_verdict_and_a_head_to_head_row(tmp_path):
    run = write_run(tmp_path / "run", system("mine@1M", "mine", 1.0e6, 1e6, fid=20.0, fid_se=2.0)
                    + system("dit@1M", "dit", 1.01e6, 1e6, fid=30.0, fid_se=2.5))
    build(run, tmp_path / "out", formats=("md", "html", "csv"))
    md = (tmp_path / "out" / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", md, re.M)
    assert sections[:2] == ["Summary", "Head to head"], sections
    # the winner with its interval, and the runner-up judged against the noise
    assert "At 1M params, mine@1M is best: 20 [16.08, 23.92], ahead of dit@1M (30 [25.1, 34.9]; beyond noise)" in md
    d_se = (2.0 ** 2 + 2.5 ** 2) ** 0.5  # independent errors: 3.2; the interval 10 +- 1.96 x 3.2
    lo, hi = map(float, re.search(r"\| 1M params \| mine@1M \| dit@1M \| 20 \| 30 \| 10 \| "
                                  r"\[\+([0-9.]+), \+([0-9.]+)\] \| yes \|", md).groups())
    assert (lo, hi) == pytest.approx((10 - 1.96 * d_se, 10 + 1.96 * d_se), rel=1e-3)  # 4 significant digits
    assert "on that detector's own scale" in md  # an embedded detector's FID is not Inception's
    assert "No quality metric with at least 3 models" in md  # two models: no fit, and the report says why


def test_differences_within_the_noise_are_called_so(tmp_path):
    run = write_run(tmp_path / "run", system("a@1M", "a", 1.0e6, 1e6, fid=20.0, fid_se=3.0)
                    + system("b@1M", "b", 1.0e6, 1e6, fid=22.0, fid_se=3.0))
    build(run, tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "ahead of b@1M (22 [16.12, 27.88]; within noise)" in md
    assert md.count("| no |") == 1


def three_sizes(tmp_path, choice=None):
    """Two families at three matched sizes; KID is measured more tightly than FID (the old rule picked it)."""
    recs = []
    for fam, base in (("a", 40.0), ("b", 60.0)):
        for i, size in enumerate((1e6, 2e6, 4e6)):
            fid = base / (1 + i)
            recs += system(f"{fam}@{size / 1e6:g}M", fam, size, size, fid=fid, fid_se=0.2 * fid,
                           kid=fid / 2, kid_se=0.01 * fid)
    return write_run(tmp_path / "run", recs, choice)


CHOICES = [(None, "", "fid (digits)"), ({"metric": "kid"}, "", "kid (digits)"),
           ({"metric": "kid"}, "fid[digits]", "fid (digits)")]


@pytest.mark.parametrize("choice, arg, want", CHOICES)
def test_the_headline_column_is_the_callers_then_the_suites_then_the_first_preferred(tmp_path, choice, arg, want):
    from diffbench.reports.load import load_run
    from diffbench.reports.verdict import headline

    wide = load_run(three_sizes(tmp_path, choice)).wide
    column, origin = headline(wide, arg or (choice or {}).get("metric", ""))
    assert MetricKey.parse(column).header() == want
    assert origin == ("fixed by the suite" if arg or choice else "the first of fid, kid measured on 3 or more models")


# the whole report for each choice (the column above, the origin as the report words it): the first in the default
# run, the others slow (11 s each, the scaling fits and plots)
@pytest.mark.parametrize("choice, arg, want", [CHOICES[0], *(pytest.param(*c, marks=pytest.mark.slow)
                                                             for c in CHOICES[1:])])
def test_the_headline_is_fixed_by_the_suite_or_the_caller_and_stable_otherwise(tmp_path, choice, arg, want):
    run = three_sizes(tmp_path, choice)
    build(run, tmp_path / "out", formats=("md",), metric=arg)
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"Headline metric: {want}, lower is better" in md
    origin = "fixed by --metric" if arg else "fixed by the suite" if choice else "the first of fid, kid"
    assert origin in md
    assert "At 4M params, a@4M is best" in md and "2 of 2 families show" in md


def test_report_tables_are_split_by_concern_and_fit_the_page(tmp_path):
    run = three_sizes(tmp_path)
    build(run, tmp_path / "out", formats=("md", "html"))
    page = (tmp_path / "out" / "report.html").read_text()

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.headings, self.widths, self.order, self._row = [], [], [], 0

        def handle_starttag(self, tag, attrs):
            if tag == "h2":
                self.order.append("h2")
            elif tag == "table":
                self.widths.append(0)
                self.order.append("table")
            elif tag == "tr":
                self._row = 0
            elif tag in ("th", "td"):
                self._row += 1
                self.widths[-1] = max(self.widths[-1], self._row)

        def handle_data(self, data):
            if self.order and self.order[-1] == "h2" and data.strip():
                self.headings.append(data.strip())
                self.order[-1] = "h2:" + data.strip()

    t = Tables()
    t.feed(page)
    assert t.headings[:2] == ["Summary", "Head to head"]
    assert t.order.index("table") == t.order.index("h2:Head to head") + 1  # the first table is the head-to-head
    assert max(t.widths) <= 12, t.widths  # the 26-column comparison is gone
    assert "display:block;max-width:100%;overflow-x:auto" in page  # and a wide one scrolls inside the page
    assert {"Size and speed", "Quality (95% intervals beside their values)", "Training budget"} <= set(t.headings)
    md = (tmp_path / "out" / "report.md").read_text()
    quality_head = next(line for line in md.splitlines() if line.startswith("| model | fid (digits)"))
    assert "| fid (digits) | fid (digits) 95% CI |" in quality_head  # the interval beside its value
    assert "| train steps | train batch | images seen | train FLOPs |" in md
    assert "| a@1M | 100 | 16 | 1,600 | 9.6e+09 |" in md


def test_a_suite_report_table_is_checked_and_carried_to_the_run(tmp_path):
    from diffbench.bench import suites

    text = ('name = "r"\n[report]\nmetric = "{}"\n[[sweeps]]\nfamilies = ["dit"]\nparams = ["0.2M"]\n'
            'inputs = ["1x8x8"]\n')
    assert suites.parse(text.format("kid"), "s.toml", "r").report == {"metric": "kid"}
    assert suites.parse(text.format("fid[digits]"), "s.toml", "r").report == {"metric": "fid[digits]"}
    for bad in ("latency_ms", "fid[digits] se", "clip_score"):
        with pytest.raises(diffbench.UserError, match="report.metric: expected the headline quality metric"):
            suites.parse(text.format(bad), "s.toml", "r")
    with pytest.raises(diffbench.UserError, match="report.title: unknown key"):
        suites.parse(text.format("fid").replace("metric", "title"), "s.toml", "r")
    with pytest.raises(diffbench.UserError, match="metric 'kud': expected fid or kid"):
        diffbench.report(three_sizes(tmp_path), tmp_path / "o", metric="kud")
    with pytest.raises(diffbench.UserError, match=r"formats must be tuple\[str, ...\], got str 'md'"):
        diffbench.report(tmp_path / "run", tmp_path / "o", formats="md")


def test_interval_columns_are_not_metric_names():
    assert MetricKey.read("fid[digits]") == MetricKey("fid", "digits")
    assert MetricKey.read("fid[digits] se") is None and MetricKey.read("fid[digits] ci_lo") is None
    assert MetricKey.read("params") == MetricKey("params")


LAYOUT = """<script>
const w = window.innerWidth, first = document.querySelector('table').getBoundingClientRect();
const out = {w: w, page: document.documentElement.scrollWidth,
             tables: [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right),
             h2: [...document.querySelectorAll('h2')].map(h => [h.textContent, h.getBoundingClientRect().top]),
             first: first.top};
document.body.insertAdjacentHTML('beforeend', '<pre id="layout">' + JSON.stringify(out) + '</pre>');
</script>"""


def test_the_report_in_chromium_at_1400_px_opens_on_its_answer_and_fits_the_page(tmp_path):
    """The rendered page (headless Chromium, 1400 x 900): the verdict and the head-to-head table above the fold,
    no table and no page wider than the window."""
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from check_report_html import FLAGS, chromium

    if chromium() is None:
        pytest.skip("chromium is not installed")
    run = three_sizes(tmp_path)
    build(run, tmp_path / "out", formats=("html",))
    page = tmp_path / "out" / "measured.html"
    page.write_text((tmp_path / "out" / "report.html").read_text() + LAYOUT)
    proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           "--window-size=1400,900", page.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120)
    layout = json.loads(re.findall(r'<pre id="layout">(\{.*?\})</pre>', proc.stdout)[-1])
    assert layout["w"] == 1400 and layout["page"] <= 1400, layout
    assert max(layout["tables"]) <= 1400, layout["tables"]
    headings = dict(layout["h2"])
    assert headings["Summary"] < headings["Head to head"] < layout["first"] < 900, layout



def test_a_papers_fid_heads_the_report_as_lower_is_better(tmp_path):
    """Runs of presets with only the paper's FID: it heads the summary, lower-better (the name-based rule called
    it higher-better and drew the compute front the wrong way)."""
    from tests.test_reports import make_run

    build(make_run(tmp_path / "run"), tmp_path / "out", formats=("md",))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Headline metric: paper_fid, lower is better" in md
    front = next(line for line in md.splitlines() if line.startswith("- Per unit of compute"))
    assert front.startswith("- Per unit of compute") and "DiT-XL/2 (" in front  # the best FID, 19.47, is on it
