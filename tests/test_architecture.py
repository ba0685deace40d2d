"""The layering the design promises: models and metrics know nothing of the harness."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED_FROM_BENCH = {"bench.errors", "bench.registry"}


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_models_and_metrics_import_only_leaf_modules_of_bench():
    for pkg in ("models", "metrics"):
        for path in (ROOT / pkg).rglob("*.py"):
            bad = {m for m in imports(path) if (m == "bench" or m.startswith("bench.")) and m not in ALLOWED_FROM_BENCH}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_reports_do_not_import_models():
    for path in (ROOT / "reports").rglob("*.py"):
        assert not {m for m in imports(path) if m.split(".")[0] == "models"}, path


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme
    quick = readme.split("## Quick start")[1].split("\n## ")[0]
    assert quick.count("```bash") == 2, "the first section has exactly two commands"
