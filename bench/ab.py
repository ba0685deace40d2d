"""``diffbench ab``: the base and the head of a change measured in one job, their repetitions interleaved.

A stored baseline compares a pull request's run with one made at another hour, perhaps on another runner: the
machine's drift between those hours is in every verdict. Here both sides run now, on this machine (asv's
``continuous``): each side in its own checkout and environment (bench/checkouts.py), every case's repetitions
alternating between the sides in rounds. The rounds go ABBA (base, head; head, base; base, head; ...), not
ABAB: a drift that is linear in time over two rounds then falls on both sides alike, where ABAB leaves the head
later on average in every pair.

A round is one ``diffbench run`` of the suite per side with every case measured once (``repetitions = 1``: one
process). Every round runs every case, the ones a suite measures once too: their counts, losses and FIDs are
deterministic, but they also write timings (a training case's step time), and a timing judged on one process a side
is judged on the process, not the code (measured: one false alarm in 5 A/Bs of ``ci-cpu`` at one commit, its
quality case's ``train_step_ms`` +8.6% with p = 1e-9 over 29 samples of one process a side, when that case ran in
round 1 only). A side's rounds are merged as a run's repetitions are (bench/repetitions.py: one value per process;
equal values stay as they are), and ``diffbench compare`` judges the head against the base.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.bench import checkouts
from diffbench.bench.accuracy import case_status
from diffbench.bench.checkouts import Checkout
from diffbench.bench.repetitions import RepetitionMismatch, merge
from diffbench.core import records
from diffbench.core.errors import ConfigError
from diffbench.core.files import write_text_atomic
from diffbench.core.records import Record
from diffbench.reports import compare as cmp

ONE_PROCESS = "sweeps.*.repetitions=1"  # each round measures a case once: the rounds are its repetitions
SIDES = ("base", "head")


@dataclass(frozen=True)
class Schedule:
    rounds: int

    @staticmethod
    def of(cases: list[Any], rounds: int | None) -> Schedule:
        """``rounds``, else the suite's largest ``repetitions``."""
        return Schedule(rounds if rounds is not None else max((c.spec.repetitions for c in cases), default=1))

    @staticmethod
    def order(number: int) -> tuple[str, str]:
        """ABBA: the sides' order in round ``number`` (1-based)."""
        return SIDES if number % 2 else SIDES[::-1]


@dataclass
class ABResult:
    """Where the A/B is (``out``: each side's rounds and merged records, ab.json, compare.md) and its verdicts."""

    out: Path
    sides: dict[str, dict[str, Any]]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    comparison: Any = None  # reports.compare.Comparison
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.comparison is not None and self.comparison.failed)


def side_suite(suite: str, side: Checkout, head_src: Path, log: Callable[[str], None]) -> str:
    """What ``suite`` is on ``side``: a built-in name as it is; a file inside the head's checkout, the side's own
    copy of it (the head's where the side has none); any other file, that file."""
    path = Path(suite)
    if not (path.suffix == ".toml" or path.exists()):
        return suite
    path = path.resolve()
    if not path.is_relative_to(head_src) or side.src == head_src:
        return str(path)
    own = side.src / path.relative_to(head_src)
    if own.is_file():
        return str(own)
    log(f"{side.label} has no {path.relative_to(head_src)}: it runs the head's")
    return str(path)


def run_round(side: Checkout, suite: str, out: Path, device: str, sets: list[str], only: str | None,
              cwd: Path) -> float:
    """One side's round: ``diffbench run`` of the suite, every selected case once; its seconds."""
    args = ["run", suite, "--out", str(out), "--device", device, "--no-progress", "--set", ONE_PROCESS]
    for s in sets:
        args += ["--set", s]
    if only:
        args += ["--only", only]
    log_file = out.parent / f"{out.name}.log"
    start = time.perf_counter()
    with log_file.open("w") as f:
        done = subprocess.run(side.command(*args), cwd=cwd, env=side.env, stdout=f, stderr=subprocess.STDOUT)
    # 1: no case of the round finished ok; its status rows are the side's outcome, which compare judges (a head that
    # breaks every case is a regression, not bad input). 2: bad input; anything else: a crash
    if done.returncode not in (0, 1):
        last = (log_file.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"{side.label}, {out.name}: diffbench run exited {done.returncode}: {last[:300]} "
                          f"(see {log_file})")
    return time.perf_counter() - start


def _error_row(first: Record, message: str) -> Record:
    return Record(first.run_id, first.case_id, first.suite, first.config, "case", None, "", status="error",
                  error=message[:500], provenance=first.provenance, case_size=1)


def merge_side(rounds: list[Path], dest: Path) -> list[str]:
    """A side's rounds as one run at ``dest`` (records.jsonl, the first round's device.json): per case, the rows of
    a round that did not end ok (failed, or outside an accuracy band), else the rounds merged as repetitions.
    Returns the unreadable lines met."""
    by_case: dict[str, list[list[Record]]] = {}
    problems: list[str] = []
    for rd in rounds:
        if not (rd / "records.jsonl").is_file():
            continue
        got = records.read(rd / "records.jsonl")
        problems += [f"{rd.name}: {p}" for p in got.problems]
        per: dict[str, list[Record]] = {}
        for r in got.records:
            per.setdefault(r.case_id, []).append(r)
        for cid, recs in per.items():
            by_case.setdefault(cid, []).append(recs)
    out: list[Record] = []
    for lists in by_case.values():
        failed = next((recs for recs in lists if case_status(recs) != "ok"), None)
        try:
            out += failed if failed is not None else merge(lists)
        except RepetitionMismatch as e:
            out.append(_error_row(lists[0][0], f"the rounds {e}"))
    if out:
        records.append(dest / "records.jsonl", out)
    if rounds and (rounds[0] / "device.json").is_file():
        shutil.copyfile(rounds[0] / "device.json", dest / "device.json")
    return problems


def prepare(repo: Path, base_ref: str, head_ref: str | None, out: Path,
            log: Callable[[str], None]) -> dict[str, Checkout]:
    """Both sides checked out and installed (the head: the running checkout unless ``head_ref``), and verified."""
    sides: dict[str, Checkout] = {}
    try:
        for name, ref in (("base", base_ref), ("head", head_ref)):
            (out / name).mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            sides[name] = checkouts.running(name) if ref is None else checkouts.make(repo, ref, name, out / name)
            checkouts.verify(sides[name], checkouts.start_dir(out / name))
            log(f"{sides[name].label} ({sides[name].ref}): ready in {time.perf_counter() - start:.0f} s")
    except BaseException:
        release(repo, sides)
        raise
    return sides


def release(repo: Path, sides: dict[str, Checkout]) -> None:
    for side in sides.values():
        checkouts.remove(repo, side)


def interleave(sides: dict[str, Checkout], schedule: Schedule, suites: dict[str, str], out: Path, device: str,
               sets: list[str], only: str | None, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The rounds, ABBA; each side's run directories at out/SIDE/round-N."""
    done = []
    for number in range(1, schedule.rounds + 1):
        seconds = {}
        for name in Schedule.order(number):  # out/SIDE exists: prepare made it
            seconds[name] = run_round(sides[name], suites[name], out / name / f"round-{number}", device, sets, only,
                                      checkouts.start_dir(out / name))
        done.append({"round": number, "order": list(Schedule.order(number)), "seconds": seconds})
        log(f"round {number} of {schedule.rounds}: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return done


def write_summary(result: ABResult, suite: str, device: str, sets: list[str]) -> None:
    c = result.comparison
    facts = {"suite": suite, "device": device, "overrides": sets, "sides": result.sides, "rounds": result.rounds,
             "summary": cmp.summary(c), "failed": c.failed, "warnings": result.warnings + c.warnings,
             "verdicts": [v.as_dict() for v in c.verdicts]}
    write_text_atomic(result.out / "ab.json", json.dumps(facts, indent=1, default=str))
    write_text_atomic(result.out / "compare.md", cmp.markdown(c))
