"""The README's Python API example runs as written, from a script file (as a user would run it),
and the API's functions agree with the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API")[1]
    return section.split("```python\n")[1].split("```")[0]


def test_readme_api_example_runs(tmp_path: Path):
    """No ``if __name__ == "__main__"`` guard in the example: case processes must not re-run the script."""
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0] == "675129632 118.621"
    assert "{'ok': 1}" in p.stdout
    assert (tmp_path / "runs" / "api-demo" / "report" / "report.md").is_file()
    assert 0 < float(lines[-1]) < 100  # FID between two halves of the digits, embedded detector


def test_api_errors_are_user_errors(tmp_path: Path):
    import diffbench

    with pytest.raises(diffbench.UserError, match="unknown preset"):
        diffbench.count("DiT-XXL/2")
    with pytest.raises(diffbench.UserError, match="no such run directory"):
        diffbench.load_run(tmp_path / "nothing")
    with pytest.raises(diffbench.UserError, match="exactly one of params= or gmacs="):
        diffbench.match("dit")
    with pytest.raises(diffbench.UserError, match="timeout must be a positive"):
        diffbench.run("smoke", out=tmp_path / "x", timeout=float("nan"))


def test_plan_lists_cases_without_running(tmp_path: Path):
    import diffbench

    cases = diffbench.plan("smoke", device="cpu", only="dit@*")
    assert [c.name for c in cases] == ["dit@1M/3x32x32/b1/fp32", "dit@1M/3x32x32/b2/fp32"]
    assert all(c.spec.device == "cpu" and c.case_id == c.spec.case_id for c in cases)
