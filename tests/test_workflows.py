"""The GitHub Actions workflows parse and do what the README says. (actionlint is not installable here: its
PyPI package downloads the binary from GitHub at build time; CI on GitHub can run it.)"""

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
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "diffbench run ci-gpu" in runs and "diffbench compare" in runs and "GITHUB_STEP_SUMMARY" in runs
    assert set(doc["on"]) == {"push", "pull_request"}
