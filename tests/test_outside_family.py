"""A backbone family from outside diffbench (models/external.py, docs/family.md): a package in a temporary folder
defines one (the file docs/family.md shows), and it is sized, trained, scored and reported beside DiT; its source is
part of its cases' ids; a family at fault is one line naming it and the fault, and the rest of the suite runs."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "patchformer.py"

BAD = {  # module -> source: the faults a family from outside can have (each inherits the example's network)
    "noimport": "raise RuntimeError('the lab cluster module is not installed here')\n",
    "buildfails": """
        @dataclasses.dataclass(frozen=True)
        class Cfg(PatchFormerConfig):
            def build(self):
                raise ValueError("width must be a power of two")
        FAMILY = dataclasses.replace(PATCHFORMER, name="buildfails", config_cls=Cfg, tiny=None)
        """,
    "wrongshape": """
        class Net(PatchFormer):
            def forward(self, x, t, y=None):
                return super().forward(x, t, y)[..., :4, :4]
        @dataclasses.dataclass(frozen=True)
        class Cfg(PatchFormerConfig):
            def build(self):
                return Net(self)
        FAMILY = dataclasses.replace(PATCHFORMER, name="wrongshape", config_cls=Cfg, tiny=None)
        """,
    "notdataclass": """
        class Cfg:
            width = 64
            depth = 2
        FAMILY = dataclasses.replace(PATCHFORMER, name="notdataclass", config_cls=Cfg)
        """,
    "nanout": """
        class Net(PatchFormer):
            def forward(self, x, t, y=None):
                return super().forward(x, t, y) * float("nan")
        @dataclasses.dataclass(frozen=True)
        class Cfg(PatchFormerConfig):
            def build(self):
                return Net(self)
        FAMILY = dataclasses.replace(PATCHFORMER, name="nanout", config_cls=Cfg,
                                     tiny=lambda: Cfg(in_channels=3, input_size=8, width=32, depth=2, num_classes=10))
        """,
    "deaf": """
        class Net(PatchFormer):
            def forward(self, x, t, y=None):
                return super().forward(x, t, None)  # drops its label
        @dataclasses.dataclass(frozen=True)
        class Cfg(PatchFormerConfig):
            def build(self):
                return Net(self)
        FAMILY = dataclasses.replace(PATCHFORMER, name="deaf", config_cls=Cfg, tiny=None)
        """,
}
HEADER = "import dataclasses\nfrom mynets.patchformer import PATCHFORMER, PatchFormer, PatchFormerConfig\n"


def make_package(root: Path) -> Path:
    """``root/mynets``: the example family as ``mynets.patchformer`` and the bad ones beside it."""
    pkg = root / "mynets"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, pkg / "patchformer.py")
    for name, body in BAD.items():
        (pkg / f"{name}.py").write_text(body if name == "noimport" else HEADER + textwrap.dedent(body))
    return root


@pytest.fixture
def isolated():
    """The families a test imports are the process's: gone again after it (registry, origins, modules, path)."""
    from diffbench.models import external
    from diffbench.models.families import FAMILIES  # the built-in families registered first: they stay

    names, refs, path, modules = set(FAMILIES.names()), dict(external._BY_REFERENCE), list(sys.path), set(sys.modules)
    yield
    for n in set(FAMILIES.names()) - names:
        del FAMILIES._items[n]
        external.ORIGINS.pop(n, None)
    external._BY_REFERENCE.clear()
    external._BY_REFERENCE.update(refs)
    sys.path[:] = path
    for m in set(sys.modules) - modules:
        if m.split(".")[0] in ("mynets", "examples", "patchformer"):
            del sys.modules[m]


def plain_code(markdown: str) -> str:
    return re.search(r"```python\n(.*?)```", markdown, re.S).group(1)


def test_the_page_shows_the_example_file_and_the_file_is_under_60_lines():
    text = EXAMPLE.read_text()
    assert plain_code((ROOT / "docs" / "family.md").read_text()) == text
    assert len(text.splitlines()) < 60


def test_the_example_suite_finds_the_family_in_its_own_folder(isolated):
    import diffbench

    cases = diffbench.plan(str(ROOT / "examples" / "vs-dit.toml"), "cpu")
    outside = [c for c in cases if c.config["model"]["family"] == "patchformer"]
    assert len(cases) == 6 and len(outside) == 3
    origin = outside[0].config["model"]["origin"]
    assert origin["module"] == "patchformer:PATCHFORMER" and origin["search"] == str(ROOT / "examples")


def test_the_built_in_families_satisfy_the_contract():
    from diffbench.models import external
    from diffbench.models.families import FAMILIES

    for _, fam in FAMILIES.items():
        external.check(fam)  # what a family from outside is held to


def test_match_sizes_the_family_from_outside_within_10_percent(isolated, tmp_path):
    import diffbench

    sys.path.insert(0, str(make_package(tmp_path)))  # as PYTHONPATH would
    rows = diffbench.match_many(["mynets.patchformer:PATCHFORMER"], [0.35e6, 0.7e6, 1.4e6], "params", "1x8x8",
                                num_classes=10, tolerance=0.1)
    assert [r.family for r in rows] == ["patchformer"] * 3
    assert all(abs(r.rel_error) <= 0.1 for r in rows)
    assert [r.params for r in rows] == [diffbench.count(r.config).params for r in rows]  # the exact count
    series = diffbench.match_many(["patchformer"], [0.35e6, 0.7e6, 1.4e6], "params", "1x8x8", num_classes=10,
                                  tolerance=0.1, scaling="width")
    assert len({r.config.depth for r in series}) == 1 and all(abs(r.rel_error) <= 0.1 for r in series)


def test_the_cli_takes_a_module_path_from_the_working_directory(isolated, cli):
    r = cli("match", "--families", "examples.patchformer:PATCHFORMER,dit", "--params", "0.7M", "--input-shape",
            "1x8x8", "--classes", "10", "--tolerance", "0.1", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert '"family": "patchformer"' in r.stdout and '"family": "dit"' in r.stdout
    r = cli("count", "examples.patchformer:PATCHFORMER", "--format", "json")
    assert r.returncode == 0 and '"params": 6780432' in r.stdout, r.stderr


@pytest.mark.parametrize("module, fault", [
    ("mynets.noimport:FAMILY", "importing mynets.noimport failed (RuntimeError: the lab cluster module"),
    ("mynets.buildfails:FAMILY", "building and denoising its config with class conditioning failed (ValueError: "
                                 "width must be a power of two)"),
    ("mynets.wrongshape:FAMILY", "denoise returned shape (2, 4, 4, 4) for an input of (2, 4, 32, 32)"),
    ("mynets.notdataclass:FAMILY", "its config_cls 'Cfg' is not a dataclass"),
    ("mynets.patchformer:NOPE", "mynets.patchformer.NOPE is missing, not a diffbench Family"),
    ("mynets.nanout:FAMILY", "denoise returned NaN or inf for its tiny config with class conditioning"),
])
def test_a_family_at_fault_is_one_line_naming_it(isolated, tmp_path, cli, module, fault):
    make_package(tmp_path)
    sys.path.insert(0, str(tmp_path))
    r = cli("match", "--families", module, "--params", "0.7M", "--input-shape", "1x8x8")
    assert r.returncode == 2 and fault in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_a_size_out_of_reach_or_a_condition_it_does_not_take_is_one_line(isolated, tmp_path, cli):
    r = cli("match", "--families", "examples.patchformer:PATCHFORMER", "--params", "1K", "--input-shape", "1x8x8",
            "--tolerance", "0.1")
    assert r.returncode == 2 and "no patchformer config within 10% of 1K params" in r.stderr
    assert "the closest has" in r.stderr
    r = cli("match", "--families", "examples.patchformer:PATCHFORMER", "--params", "0.7M", "--cond", "text")
    assert r.returncode == 2 and "family patchformer takes class or none conditioning, not text" in r.stderr


def test_counting_falls_back_to_a_real_build_when_meta_cannot_run_it(isolated, tmp_path):
    import diffbench

    make_package(tmp_path)
    (tmp_path / "mynets" / "itemy.py").write_text(HEADER + textwrap.dedent("""
        class Net(PatchFormer):
            def forward(self, x, t, y=None):
                scale = float(t.float().mean().item()) * 0 + 1  # .item(): no value on meta
                return super().forward(x, t, y) * scale
        @dataclasses.dataclass(frozen=True)
        class Cfg(PatchFormerConfig):
            def build(self):
                return Net(self)
        FAMILY = dataclasses.replace(PATCHFORMER, name="itemy", config_cls=Cfg,
                                     tiny=lambda: Cfg(in_channels=3, input_size=8, width=32, depth=2, num_classes=10))
        """))
    sys.path.insert(0, str(tmp_path))
    c = diffbench.count("mynets.itemy:FAMILY", in_channels=1, input_size=8, width=64, depth=2, num_classes=10)
    plain = diffbench.count("mynets.patchformer:PATCHFORMER", in_channels=1, input_size=8, width=64, depth=2,
                            num_classes=10)
    assert (c.counted_on, plain.counted_on) == ("cpu", "meta")
    assert "meta failed" in c.fallback_reason and c.params == plain.params


CHECKPOINT_SUITE = """
name = "outside-checkpoint"
[protocols.digits-class]
kind = "class"
samples = 10
classes = 10
reference = "digits"
detector = "digits"
sample_steps = 4
scheduler = "ddim"
guidance = 1.5
[defaults]
batch_sizes = [5]
warmup = 1
repeats = 3
measure = ["counts", "speed", "quality"]
[[sweeps]]
families = ["mynets.patchformer:PATCHFORMER"]
params = ["0.35M"]
input_shapes = ["3x8x8"]
classes = 10
tolerance = 0.1
checkpoint = "pf.pt"
protocol = "digits-class"
"""


def test_a_checkpoint_of_the_family_is_loaded_sampled_and_scored_by_a_protocol(isolated, tmp_path):
    import torch

    import diffbench
    from diffbench.diffusion import datasets
    from tests.test_pretrained import _save_images

    sys.path.insert(0, str(make_package(tmp_path)))
    config = diffbench.match("mynets.patchformer:PATCHFORMER", params="0.35M", input_shape="3x8x8", num_classes=10,
                             tolerance=0.1).config
    torch.manual_seed(0)
    torch.save(config.build().state_dict(), tmp_path / "pf.pt")
    _save_images(datasets.digits(64).images[:40], tmp_path / "digits")
    (tmp_path / "s.toml").write_text(CHECKPOINT_SUITE)
    run = diffbench.run(str(tmp_path / "s.toml"), tmp_path / "run", device="cpu")
    assert run.statuses == {"ok": 1}, run.records[["metric", "status", "error"]].to_string()
    assert {"fid[digits-class:digits/embedded]", "latency_ms", "gmacs"} <= set(run.records["metric"])
    assert set(run.records["family"]) == {"patchformer"}
    same = diffbench.compare(tmp_path / "run", tmp_path / "run", allow_env_change=True)
    assert same.verdicts and not same.failed
    assert all(v.case.startswith("patchformer@0.35M") for v in same.verdicts)


def case_ids(suite: Path, env: dict[str, str]) -> list[str]:
    code = f"import diffbench; print(' '.join(c.case_id for c in diffbench.plan({str(suite)!r}, 'cpu')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_editing_the_family_makes_new_case_ids_and_unchanged_code_reuses_them(tmp_path):
    make_package(tmp_path)
    suite = tmp_path / "s.toml"
    suite.write_text('name = "ids"\n[defaults]\nmeasure = ["counts"]\n[[sweeps]]\n'
                     'families = ["mynets.patchformer:PATCHFORMER", "dit"]\nparams = ["0.7M"]\n'
                     'input_shapes = ["1x8x8"]\nclasses = 10\ntolerance = 0.1\n')
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    first, again = case_ids(suite, env), case_ids(suite, env)
    assert first == again and len(first) == 2
    module = tmp_path / "mynets" / "patchformer.py"
    module.write_text(module.read_text().replace("* 0.02)", "* 0.01)"))  # the same shapes, other code
    edited = case_ids(suite, env)
    assert edited[0] != first[0] and edited[1] == first[1]  # dit's case is untouched


def test_an_installed_entry_point_names_the_family(tmp_path):
    make_package(tmp_path)
    info = tmp_path / "mynets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mynets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[diffbench.families]\npatchformer = mynets.patchformer:PATCHFORMER\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONWARNINGS="ignore")
    code = ("import diffbench; r = diffbench.match('patchformer', params='0.7M', input_shape='1x8x8', "
            "num_classes=10, tolerance=0.1); print(r.family, r.params)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("patchformer "), r.stderr
    r = subprocess.run([sys.executable, "-m", "diffbench", "list", "families"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert "from mynets.patchformer:PATCHFORMER" in r.stdout


SUITE = """
name = "outside"
[report]
metric = "fid"
[defaults]
measure = ["counts", "train", "quality"]
batch_sizes = [8]
train_batch = 32
train_steps = {steps}
lr = 0.002
samples = {samples}
sample_steps = 5
scheduler = "ddim"
prediction = "v_prediction"
[[sweeps]]
families = [{families}]
params = [{params}]
input_shapes = ["1x8x8"]
classes = 10
tolerance = 0.1
"""


def report_text(run) -> str:
    import diffbench

    return next(p for p in diffbench.report(run) if p.name == "report.md").read_text()


def test_a_suite_with_dit_runs_the_family_and_the_report_carries_it(isolated, tmp_path):
    """The family beside DiT at two sizes, trained, sampled and scored on the digits; the report's family table,
    fits and both DiT views carry it (at three sizes, with a SIGKILL and --resume: the slow test below)."""
    import diffbench

    make_package(tmp_path)  # the suite's folder is searched
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(steps=20, samples=64, families='"dit", "mynets.patchformer:PATCHFORMER"',
                                  params='"0.35M", "0.7M"'))
    run = diffbench.run(str(suite), tmp_path / "run", device="cpu")
    assert run.statuses == {"ok": 4}, run.records[["label", "status", "error"]].to_string()
    fams = set(run.records["family"])
    assert fams == {"dit", "patchformer"}
    fid = run.records[run.records["metric"].str.startswith("fid[")]
    assert len(fid[fid["family"] == "patchformer"]) == 2
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    origin = next(r["config"]["model"]["origin"] for r in lines if r["config"]["model"]["family"] == "patchformer")
    assert origin["module"] == "mynets.patchformer:PATCHFORMER" and len(origin["sha256"]) == 64
    md = report_text(run)
    by_family = md.split("## Scaling by family")[1].split("## ")[0]
    assert "| patchformer | 2 |" in by_family and "| dit | 2 |" in by_family
    assert "patchformer: fid[digits]" in by_family  # its own exponent
    plots = {p.name for p in (tmp_path / "run" / "report" / "plots").iterdir()}
    assert {"quality_vs_gmacs.png", "quality_vs_training_compute.png"} <= plots  # DiT's two views


def test_faulty_families_end_their_own_cases_and_dit_completes(isolated, tmp_path):
    """Done when (#27): each bad family one line naming it and its fault; the dit cases still complete; the family
    that drops its label is trained and the report says it does not use its condition."""
    make_package(tmp_path)
    bad = ", ".join(f'"mynets.{m}:FAMILY"' for m in BAD)
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(steps=20, samples=64, families=f'"dit", {bad}', params='"0.35M"')
                     + '\n[[sweeps]]\nfamilies = ["mynets.patchformer:PATCHFORMER"]\nparams = ["1K"]\n'
                       'input_shapes = ["1x8x8"]\nclasses = 10\ntolerance = 0.1\n')
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-m", "diffbench", "run", str(suite), "--out", str(tmp_path / "run"),
                        "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # some cases failed, not the run (--strict: 1)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("diffbench: warning: ")]
    for fam, words in [("mynets.noimport:FAMILY", "importing mynets.noimport failed"),
                       ("buildfails", "width must be a power of two"), ("wrongshape", "denoise returned shape"),
                       ("notdataclass", "is not a dataclass"),
                       ("patchformer", "no patchformer config within 10% of 1K params")]:
        assert sum(fam in ln and words in ln for ln in lines) == 1, (fam, r.stderr)
    import diffbench

    run = diffbench.load_run(tmp_path / "run")
    status = run.records.groupby("label")["status"].agg(lambda s: set(s))
    assert "error" not in status["dit@0.35M"] | status["deaf@0.35M"]  # ok (train_mfu is unsupported on a CPU)
    assert all(status[lbl] == {"error"} for lbl in status.index if not lbl.startswith(("dit@", "deaf@")))
    assert "deaf does not use its condition" in report_text(run)


@pytest.mark.slow
def test_done_when_three_sizes_beside_dit_survive_a_sigkill_and_resume(isolated, tmp_path):
    """#27's done-when, whole: the family and DiT at 0.35M, 0.7M and 1.4M, the runner SIGKILLed (with its case's
    process) once two cases are complete, then --resume: the complete cases are kept, the rest run, and the report
    carries the family at three sizes."""
    import signal
    import time

    import diffbench

    make_package(tmp_path)
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(steps=40, samples=128, families='"dit", "mynets.patchformer:PATCHFORMER"',
                                  params='"0.35M", "0.7M", "1.4M"'))
    records = tmp_path / "run" / "records.jsonl"
    args = [sys.executable, "-m", "diffbench", "run", str(suite), "--out", str(tmp_path / "run"), "--device", "cpu"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        done = {json.loads(ln)["case_id"] for ln in records.read_text().splitlines()} if records.exists() else set()
        if len(done) >= 4:  # the dit cases and one of the family's
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {json.loads(ln)["case_id"]: json.loads(ln)["run_id"] for ln in records.read_text().splitlines()}
    assert 4 <= len(kept) < 6
    r = subprocess.run([*args, "--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    run = diffbench.load_run(tmp_path / "run")
    assert run.statuses == {"ok": 6}
    after = dict(zip(run.records["case_id"], run.records["run_id"], strict=True))
    assert all(after[c] == rid for c, rid in kept.items())  # complete cases were not run again
    md = report_text(run)
    assert "| patchformer | 3 |" in md and "| dit | 3 |" in md
