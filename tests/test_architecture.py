"""The layering the design promises, and one importable package.

- Everything imports as ``diffbench.*`` (or relatively): nothing imports a top-level ``bench``,
  ``models``, ``metrics`` or ``reports``, so a second copy cannot be imported from the
  repository root and a user's own ``models.py`` cannot shadow ours.
- ``diffbench.core`` (errors, registry, records schema) imports nothing else of diffbench.
- ``models`` and ``metrics`` know nothing of the harness (``bench``); ``reports`` reads records only.
- The CLI (``diffbench.cli``) sits above the API: nothing in the package imports it but ``__main__``; ``core``
  names no command.
- An import inside a function is for an optional dependency or a measured start-up cost (``DEFERRED``), never
  to hide an import cycle.
- No module over 400 lines, no function over 50.
"""

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models", "metrics", "reports", "diffusion")
SOURCE = (*PACKAGES, "diffbench/core", "diffbench/cli")
# what a function may import in its body, and why (import times measured after torch, numpy and pandas, on the
# 2-core CI machine: each would otherwise be paid by every command and every case process that never uses it)
DEFERRED = {
    "diffusers": "1.4 s (diffusers.models): only pipelines with diffusers parts, pretrained directories, the VAE",
    "transformers": "2.2 s (CLIPTextModel): only pretrained text encoders and Hugging Face CLIPs",
    "torch_fidelity": "1.1 s: only the Inception detector in torch-fidelity mode",
    "cleanfid": "1.0 s (its Inception): only the Inception detector in clean-fid modes",
    "torchvision": "1.0 s: only the Inception detector",
    "sklearn": "0.6 s: only the embedded digits dataset",
    "scipy": "0.45 s (scipy.stats): only the report's history plots",
    "matplotlib": "0.3 s: only the report's plots",
    "submitit": "optional: pip install 'diffbench[slurm]'",
    "ray": "optional: pip install 'diffbench[ray]'",
    "open_clip": "optional: pip install 'diffbench[clip]'",
    "pynvml": "absent in an install without dependencies: NVML is then reported not available, not a crash",
    "pytest": "the pytest plugin's hooks run inside pytest only",
    "fcntl": "POSIX only",
    "ctypes": "Linux only: prctl, so that torchrun dies with the runner (bench/ranks.py)",
}
# modules whose function-level imports of diffbench itself are their purpose
LAZY = {
    "diffbench/__init__.py": "import diffbench stays cheap: the API (and torch) load with the first function",
    # the CLI registers all of its commands at start-up; a command loads what only it needs when it runs, so that
    # 'diffbench list families' does not pay for diffusers' schedulers (1.4 s, through the pipelines' registry),
    # pandas and scipy (0.9 s, the reports)
    "diffbench/api.py": "one module, many entry points: each function loads its own machinery (the runner, the "
                        "pipelines and diffusers, torchmetrics, the reports) when it is called",
    "diffbench/api_data.py": "as diffbench/api.py: each data function loads the autoencoder and the datasets",
    "diffbench/api_ab.py": "as diffbench/api.py: the A/B loads the suites, the checkouts and the reports",
    "bench/catalog.py": "each listing loads its own registry when it is listed",
    # every case is a fresh process: what it imports at start it pays once per case
    "metrics/quality.py": "torchmetrics (1.2 s, metrics/sharded.py) only for features sharded over torchrun's ranks",
    "diffbench/cli/commands/comparing.py": "the reports' comparison",
    "diffbench/cli/commands/counting.py": "the pipelines' registry",
    "diffbench/cli/commands/matching.py": "the families' registry",
    "diffbench/cli/commands/reporting.py": "the reports",
    # read when the CLI starts (--help 0.1 s, --version, the listings): torch (1.0 s) only where it is used
    "diffbench/core/distributed.py": "torch.distributed: only under torchrun",
    "bench/precision.py": "torch: only when a case's precision context is entered (settings name the modes)",
    "metrics/captions.py": "torch: only to tokenise (the pipelines' specs read the vocabulary)",
    "diffusion/config.py": "the EMA (torch): only when training averages its weights",
}
OLD_TOP_LEVEL = {"bench", "models", "metrics", "reports", "diffusion", "core", "api"}


def python_files(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts]


def imports(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved against its package)."""
    out: set[str] = set()
    rel = path.relative_to(ROOT)
    pkg = ["diffbench", *rel.parts[:-1]] if rel.parts[0] in PACKAGES else list(rel.parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from diffbench import models` imports a module
    return out


def test_nothing_imports_the_folders_as_top_level_packages():
    for path in python_files(*PACKAGES, "diffbench", "tests", "scripts"):
        bad = {m for m in imports(path) if m.split(".")[0] in OLD_TOP_LEVEL}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: import them as diffbench.<package>"


def test_core_imports_nothing_else_of_diffbench():
    for path in (ROOT / "diffbench" / "core").rglob("*.py"):
        bad = {m for m in imports(path) if m.startswith("diffbench") and not m.startswith("diffbench.core")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_models_and_metrics_do_not_import_the_harness():
    for path in python_files("models", "metrics"):
        bad = {m for m in imports(path) if m.startswith(("diffbench.bench", "diffbench.reports", "diffbench.api"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_diffusion_does_not_import_the_harness():
    for path in python_files("diffusion"):
        bad = {m for m in imports(path) if m.startswith(("diffbench.bench", "diffbench.reports", "diffbench.api"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_reports_do_not_import_models():
    for path in python_files("reports"):
        assert not {m for m in imports(path) if m.startswith("diffbench.models")}, path


def test_the_package_links_every_folder():
    for name in PACKAGES:
        link = ROOT / "diffbench" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), link


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme
    quick = readme.split("## Quick start")[1].split("\n## ")[0]
    assert quick.count("```bash") == 2, "the first section has exactly two commands"


def test_the_wheel_holds_only_diffbench(tmp_path):
    """``pip install .`` installs one top-level package, with the suites and detector weights in it."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("diffbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"diffbench"}, top
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["diffbench"]
    for needed in ("diffbench/bench/suites/quick.toml", "diffbench/core/records.py", "diffbench/models/dit.py",
                   "diffbench/__main__.py"):
        assert needed in names, needed
    assert any(n.startswith("diffbench/metrics/assets/") for n in names)


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Path:
    """A user's research folder: a DiT-style models.py and a metrics/ package that must never be imported."""
    (tmp_path / "models.py").write_text("raise SystemExit('the user models.py was imported')\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "__init__.py").write_text("raise SystemExit('the user metrics/ was imported')\n")
    (tmp_path / "bench.py").write_text("raise SystemExit('the user bench.py was imported')\n")
    return tmp_path


def test_commands_work_from_a_folder_with_a_models_py(hostile_folder: Path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    exe = Path(sys.executable).parent / "diffbench"
    for argv in ([str(exe), "list", "families"], [sys.executable, "-m", "diffbench", "list", "families"]):
        if not Path(argv[0]).exists():
            continue
        p = subprocess.run(argv, cwd=hostile_folder, capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        assert "dit" in p.stdout and "unet-ldm" in p.stdout
    code = "import diffbench; c = diffbench.count('DiT-XL/2'); assert c.params == 675129632, c.params; print('ok')"
    p = subprocess.run([sys.executable, "-c", code], cwd=hostile_folder, capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_installed_copy_records_its_version_not_a_foreign_commit(tmp_path: Path):
    """Installed inside someone else's git repository, provenance must not record *their* commit."""
    from diffbench.bench import provenance

    foreign = tmp_path / "theirs"
    (foreign / "site" / "diffbench").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(foreign)], check=True)
    assert provenance.git_state.__wrapped__(foreign / "site") == (None, None)
    assert provenance.is_own_checkout(ROOT) == (ROOT / ".git").exists()


def function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement inside a function body of ``path``."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in fn.body:
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Import):
                        out += [(node.lineno, a.name) for a in node.names]
                    elif isinstance(node, ast.ImportFrom):
                        out.append((node.lineno, "." * node.level + (node.module or "")))
    return sorted(set(out))


def test_imports_inside_functions_are_deferred_on_purpose():
    files = [*python_files(*SOURCE), ROOT / "diffbench" / "__init__.py", ROOT / "diffbench" / "api.py",
             ROOT / "diffbench" / "__main__.py"]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in files
           if p.relative_to(ROOT).as_posix() not in LAZY for line, mod in function_imports(p)
           if mod.split(".")[0] not in DEFERRED]
    assert not bad, "import at the top of the module (break a cycle by moving what both sides need): " + "; ".join(bad)


def test_the_function_import_check_finds_one(tmp_path):
    probe = ROOT / "bench" / "_function_import_probe.py"
    probe.write_text("def f():\n    from diffbench.bench import suites\n    import diffusers\n    return suites\n")
    try:
        assert function_imports(probe) == [(2, "diffbench.bench"), (3, "diffusers")]
    finally:
        probe.unlink()


def test_only_main_imports_the_cli():
    for path in [*python_files(*PACKAGES, "diffbench/core", "scripts"), ROOT / "diffbench" / "api.py"]:
        bad = {m for m in imports(path) if m == "diffbench.cli" or m.startswith("diffbench.cli.")}
        assert not bad, f"{path.relative_to(ROOT)} imports the CLI ({bad}); the CLI calls the API, not the reverse"
    main = (ROOT / "diffbench" / "__main__.py").read_text()
    assert "from diffbench.cli import main" in main
    assert 'diffbench = "diffbench.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_core_names_no_command():
    from diffbench.cli import COMMANDS, build_parser

    build_parser()  # registers every command
    assert {"run", "sample", "fid", "stats"} <= set(COMMANDS.names())
    for path in python_files("diffbench/core"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = [c for c in COMMANDS.names() if node.value == c or f"diffbench {c}" in node.value]
                assert not named, f"{path.relative_to(ROOT)}:{node.lineno} names the command {named[0]!r}"


@pytest.mark.parametrize("folder", PACKAGES)
def test_a_folder_refuses_to_load_under_another_name(folder):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", f"import {folder}"], cwd=ROOT, capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode != 0 and f"import diffbench.{folder}" in p.stderr, p.stderr[-500:]


def test_no_module_over_400_lines_and_no_function_over_50():
    files = [*python_files(*SOURCE), ROOT / "diffbench" / "api.py"]
    long_modules = [f"{p.relative_to(ROOT)} ({n})" for p in files if (n := len(p.read_text().splitlines())) > 400]
    long_functions = [f"{p.relative_to(ROOT)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1})"
                      for p in files for fn in ast.walk(ast.parse(p.read_text()))
                      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.end_lineno - fn.lineno >= 50]
    assert not long_modules and not long_functions, f"modules: {long_modules}; functions: {long_functions}"
