"""How often the regression gate cries wolf, and whether it sees a real slowdown: ``diffbench ab`` against the
stored-baseline route, on this machine.

Three routes, each ``--repeats`` times, all at this checkout's commit (the working tree must be clean):

* ``stored``: the suite run once and kept as a baseline (``diffbench baseline``), then run again and compared with
  it, as the GPU workflow did before the A/B (here minutes apart, on a runner hours: a floor on its false alarms);
* ``ab``: ``diffbench ab HEAD`` - the same commit on both sides, interleaved: every alarm is a false one;
* ``slow``: ``diffbench ab HEAD FIXTURE``, FIXTURE a commit (made here, on no branch) whose DiT forward sleeps a
  quarter of its own duration after it runs: the DiT case 25% slower, the other cases unchanged. Flagged is exit
  status 1 with the DiT latency a regression and no other case's timing one.

    python scripts/ab_false_alarms.py --repeats 5                 # ci-cpu, about 45 minutes on 2 cores
    python scripts/ab_false_alarms.py --routes ab --suite my.toml --repeats 3

Prints one line per repeat and a summary table; writes everything under --out (summary.json at its root).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIFFBENCH = [sys.executable, "-m", "diffbench"]
SLOWER = 0.25
FIXTURE = f'''

# --- a test fixture (scripts/ab_false_alarms.py): every DiT forward {SLOWER:.0%} slower ---
import time as _fixture_time  # noqa: E402

_fixture_forward = DiT.forward


def _slower_forward(self, *args, **kwargs):
    start = _fixture_time.perf_counter()
    out = _fixture_forward(self, *args, **kwargs)
    _fixture_time.sleep({SLOWER} * (_fixture_time.perf_counter() - start))
    return out


DiT.forward = _slower_forward
'''


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def fixture_commit(where: Path) -> str:
    """A commit on no branch: HEAD with every DiT forward 25% slower (the worktree that made it is removed)."""
    git("worktree", "add", "--quiet", "--detach", str(where), "HEAD")
    try:
        with (where / "models" / "dit.py").open("a") as f:
            f.write(FIXTURE)
        subprocess.run(["git", "-C", str(where), "-c", "user.name=fixture", "-c", "user.email=fixture@localhost",
                        "commit", "--quiet", "--all", "--message", "fixture: DiT forward 25% slower"], check=True)
        return subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    finally:
        git("worktree", "remove", "--force", str(where))


def call(args: list[str], log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT).returncode
    if code not in (0, 1):
        sys.exit(f"{' '.join(args)} exited {code}; see {log}")
    return code, time.perf_counter() - start


def timing_regressions(verdicts: list[dict]) -> list[str]:
    return [v["case"] for v in verdicts if v["verdict"] == "regression" and v["metric"].endswith("_ms")]


def stored(out: Path, suite: str, repeats: int) -> list[dict]:
    out.mkdir(parents=True)
    call([*DIFFBENCH, "run", suite, "--out", str(out / "baseline-run"), "--no-progress"], out / "baseline-run.log")
    call([*DIFFBENCH, "baseline", str(out / "baseline-run"), "-o", str(out / "baseline.json")], out / "baseline.log")
    rows = []
    for i in range(1, repeats + 1):
        _, seconds = call([*DIFFBENCH, "run", suite, "--out", str(out / f"run-{i}"), "--no-progress"],
                          out / f"run-{i}.log")
        code, _ = call([*DIFFBENCH, "compare", str(out / "baseline.json"), str(out / f"run-{i}"), "--format", "json"],
                       out / f"compare-{i}.json")
        verdicts = json.loads((out / f"compare-{i}.json").read_text())["verdicts"]
        rows.append({"repeat": i, "alarm": code == 1, "regressions": timing_regressions(verdicts),
                     "seconds": round(seconds)})
    return rows


def ab(out: Path, suite: str, repeats: int, head: str | None) -> list[dict]:
    out.mkdir(parents=True)
    rows = []
    for i in range(1, repeats + 1):
        code, seconds = call([*DIFFBENCH, "ab", "HEAD", *([head] if head else []), "--suite", suite, "--out",
                              str(out / str(i)), "--format", "json"], out / f"{i}.json")
        facts = json.loads((out / str(i) / "ab.json").read_text())
        dit = [v for v in facts["verdicts"] if v["case"].startswith("dit@") and v["metric"] == "latency_ms"]
        rows.append({"repeat": i, "alarm": code == 1, "regressions": timing_regressions(facts["verdicts"]),
                     "dit_latency_change": [v["change"] for v in dit], "seconds": round(seconds)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--suite", default="ci-cpu")
    p.add_argument("--routes", default="stored,ab,slow")
    p.add_argument("--out", default=f"runs/ab-false-alarms-{time.strftime('%Y%m%d-%H%M%S')}")
    a = p.parse_args()
    if git("status", "--porcelain", "--untracked-files=no"):
        sys.exit("the working tree has uncommitted changes: commit them, so both sides are one commit")
    out = Path(a.out).resolve()
    summary: dict[str, object] = {"commit": git("rev-parse", "HEAD"), "suite": a.suite, "repeats": a.repeats}
    for route in a.routes.split(","):
        if route == "stored":
            rows = stored(out / "stored", a.suite, a.repeats)
        elif route == "ab":
            rows = ab(out / "ab", a.suite, a.repeats, None)
        elif route == "slow":
            fixture = fixture_commit(out / "fixture-src")
            summary["fixture"] = fixture
            rows = ab(out / "slow", a.suite, a.repeats, fixture)
        else:
            sys.exit(f"unknown route {route!r}: stored, ab or slow")
        for r in rows:
            print(route, json.dumps(r), flush=True)
        summary[route] = rows
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n| route | repeats | alarms |\n|---|---|---|")
    for route in a.routes.split(","):
        rows = summary[route]
        print(f"| {route} | {len(rows)} | {sum(r['alarm'] for r in rows)} of {len(rows)} |")
    print(f"\n{out / 'summary.json'}")


if __name__ == "__main__":
    main()
