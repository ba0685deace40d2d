"""``diffbench ab``: both sides of a change in one job, each in its own checkout and environment, repetitions
interleaved ABBA, merged as a run's repetitions are, and compared. The end-to-end test runs the real thing in a
scratch clone (so this checkout's repository gets no commits): a base, and a head whose DiT forward sleeps as
long again as it ran, which the A/B must flag."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from diffbench.bench import ab, checkouts
from diffbench.core import records
from diffbench.core.errors import ConfigError
from diffbench.core.records import Record
from tests.test_hostile_runs import one_line_error

ROOT = Path(__file__).resolve().parent.parent
TINY = """
name = "tiny-ab"
[defaults]
batch_sizes = [2]
precisions = ["fp32"]
warmup = 2
repeats = 10
measure = ["counts", "speed"]
timeout_s = 120
[[sweeps]]
name = "timed"
families = ["dit"]
params = ["0.7M"]
input_shapes = ["3x16x16"]
repetitions = 2
"""
SLOWER = """
import time as _t
_forward = DiT.forward
def _slower(self, *a, **k):
    start = _t.perf_counter(); out = _forward(self, *a, **k); _t.sleep(_t.perf_counter() - start); return out
DiT.forward = _slower
"""


def case(name: str, repetitions: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, spec=SimpleNamespace(repetitions=repetitions))


def test_rounds_follow_the_suites_repetitions_in_abba_order():
    cases = [case("dit@1M/b4", 4), case("uvit@1M/b4", 3), case("dit@0.7M/quality", 1)]
    assert ab.Schedule.of(cases, None).rounds == 4 and ab.Schedule.of(cases, 6).rounds == 6
    assert [ab.Schedule.order(n) for n in (1, 2, 3, 4)] == [("base", "head"), ("head", "base")] * 2


def rec(cid: str, metric: str, value: float | None, status: str = "ok") -> Record:
    return Record("r", cid, "s", {"device": "cpu"}, metric, value, "ms", status=status, case_size=2,
                  samples=[value, value] if metric == "latency_ms" and value else None)


def test_a_sides_rounds_merge_as_repetitions(tmp_path):
    rounds = [tmp_path / "round-1", tmp_path / "round-2", tmp_path / "round-3"]
    for i, rd in enumerate(rounds):
        rd.mkdir()
        recs = [rec("fast", "params", 10.0), rec("fast", "latency_ms", 1.0 + i),
                rec("fast", "energy_j", None, "unsupported")]  # a metric this machine cannot measure: still ok
        if i == 0:  # measured once: round 1 only
            recs += [rec("once", "params", 5.0), rec("once", "fid", 3.0)]
        recs += [rec("flaky", "case", None, "timeout")] if i == 1 else [rec("flaky", "latency_ms", 2.0)]
        records.append(rd / "records.jsonl", recs)
    (rounds[0] / "device.json").write_text('{"calibration_fp32_matmul_gflops": 1.0}')
    assert ab.merge_side(rounds, tmp_path) == []
    got = records.read(tmp_path / "records.jsonl").records
    by = {(r.case_id, r.metric): r for r in got}
    assert by["fast", "latency_ms"].value == 2.0 and by["fast", "latency_ms"].extra["repetitions"] == [1.0, 2.0, 3.0]
    assert by["fast", "params"].value == 10.0 and by["once", "fid"].value == 3.0
    assert by["flaky", "case"].status == "timeout"  # a failed round is the case's outcome, not averaged away
    assert (tmp_path / "device.json").is_file()


def test_rounds_that_wrote_different_metrics_are_an_error_row(tmp_path):
    rounds = [tmp_path / "r1", tmp_path / "r2"]
    for rd, metric in zip(rounds, ("latency_ms", "fid"), strict=True):
        rd.mkdir()
        records.append(rd / "records.jsonl", [rec("c", metric, 1.0)])
    ab.merge_side(rounds, tmp_path)
    [row] = records.read(tmp_path / "records.jsonl").records
    assert row.status == "error" and "different metrics" in row.error


def test_a_suite_file_inside_the_checkout_is_each_sides_own(tmp_path):
    here, there = tmp_path / "head", tmp_path / "base"
    for d in (here, there):
        (d / "suites").mkdir(parents=True)
        (d / "suites" / "mine.toml").write_text("x")
    (here / "suites" / "new.toml").write_text("x")
    side = checkouts.Checkout("base", "main", "0" * 40, False, there, Path("python"), {}, made_here=True)
    said = []
    assert ab.side_suite(str(here / "suites" / "mine.toml"), side, here, said.append) == \
        str(there / "suites" / "mine.toml")
    assert ab.side_suite(str(here / "suites" / "new.toml"), side, here, said.append) == \
        str(here / "suites" / "new.toml") and "no suites/new.toml" in said[0]
    assert ab.side_suite("ci-cpu", side, here, said.append) == "ci-cpu"
    outside = tmp_path / "elsewhere.toml"
    outside.write_text("x")
    assert ab.side_suite(str(outside), side, here, said.append) == str(outside)


def test_pythonpath_entries_holding_another_diffbench_are_dropped(tmp_path):
    (tmp_path / "a" / "diffbench").mkdir(parents=True)
    (tmp_path / "a" / "diffbench" / "__init__.py").write_text("")
    (tmp_path / "b").mkdir()
    path = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    assert checkouts._without_diffbench(path) == str(tmp_path / "b")
    assert checkouts._without_diffbench(str(tmp_path / "a")) is None


def test_bad_refs_and_outputs_are_one_line_errors(tmp_path, cli):
    one_line_error(cli("ab", "no-such-branch-xyz"), "'no-such-branch-xyz' names no commit", "git fetch")
    with pytest.raises(ConfigError, match="not a git ref"):  # never an option to git
        checkouts.resolve(ROOT, "--upload-pack=x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    one_line_error(cli("ab", "HEAD", "--suite", "smoke", "--out", str(tmp_path / "full")), "not empty",
                   "new directory")
    one_line_error(cli("ab", "HEAD", "--rounds", "0"), "--rounds")


def _scratch_clone(tmp_path: Path) -> tuple[Path, str]:
    """A clone of this repository holding this checkout's files as its base commit and, checked out on top, a
    commit whose DiT forward is twice as slow; returns (clone, base commit)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(ROOT), str(clone)], check=True)
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "checkout", "--quiet", "--detach"], check=True)
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):  # the working tree's files (new ones too): the code under test
        src, dst = ROOT / rel, clone / rel
        if src.is_file() and not src.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "--quiet", "--allow-empty", "-m", "base"], check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    with (clone / "models" / "dit.py").open("a") as f:
        f.write(SLOWER)
    subprocess.run([*git, "commit", "--quiet", "--all", "-m", "slower"], check=True)
    return clone, base


def test_ab_flags_a_head_whose_dit_is_twice_as_slow(tmp_path):
    clone, base = _scratch_clone(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    done = subprocess.run([sys.executable, "-m", "diffbench", "ab", base, "--suite", str(tmp_path / "tiny.toml"),
                           "--out", str(tmp_path / "ab"), "--format", "json"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=900)
    assert done.returncode == 1, done.stderr[-3000:]
    facts = json.loads((tmp_path / "ab" / "ab.json").read_text())
    assert facts["sides"]["base"]["commit"] == base and facts["sides"]["head"]["ref"] == checkouts.WORKING_TREE
    assert [r["order"] for r in facts["rounds"]] == [["base", "head"], ["head", "base"]]
    regressions = {(v["case"], v["metric"]) for v in facts["verdicts"] if v["verdict"] == "regression"}
    assert ("dit@0.7M/b2/fp32", "latency_ms") in regressions, facts["verdicts"]
    for side in ab.SIDES:  # two rounds, each one process, merged per side as repetitions
        got = records.read(tmp_path / "ab" / side / "records.jsonl").records
        lat = next(r for r in got if r.metric == "latency_ms")
        assert len(lat.extra["repetitions"]) == 2 and len(lat.samples) == 20
        assert [r.value for r in got if r.metric == "params"] == [696984.0]  # equal in both rounds: as it is
    base_prov = next(r for r in records.read(tmp_path / "ab" / "base" / "records.jsonl").records).provenance
    assert base_prov["git_commit"] == base  # the base ran its own code
    worktrees = subprocess.run(["git", "-C", str(clone), "worktree", "list"], capture_output=True, text=True)
    assert len(worktrees.stdout.strip().splitlines()) == 1 and not (tmp_path / "ab" / "base" / "env").exists()


class Exits(checkouts.Checkout):
    """A side whose ``diffbench run`` only exits with a given status."""

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", f"import sys; print('said'); sys.exit({self.ref})"]


def test_a_round_with_no_case_ok_is_compared_and_bad_input_stops_the_ab(tmp_path):
    side = lambda code: Exits("head", code, "0" * 40, False, tmp_path, Path(sys.executable), dict(os.environ))  # noqa: E731
    assert ab.run_round(side("1"), "s", tmp_path / "round-1", "cpu", [], None, tmp_path) >= 0  # its rows: broken
    for code in ("2", "3"):
        with pytest.raises(ConfigError, match=f"exited {code}: said"):
            ab.run_round(side(code), "s", tmp_path / "round-2", "cpu", [], None, tmp_path)
