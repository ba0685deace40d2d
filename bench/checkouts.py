"""A commit's own checkout and environment beside the running diffbench: what each side of ``diffbench ab`` runs in.

The base of an A/B must run its own code with its own dependencies, on the machine and in the job of the head. A
git worktree gives the code. The environment is a venv beside it that sees the head's installed packages (one
``.pth`` line per site-packages directory of the head) and gets the commit's own diffbench by an editable install:
pip then installs only what the commit needs and the head lacks (a changed pin), in seconds where nothing differs,
where a fresh environment would download torch again. A ``.pth`` line adds a directory and nothing else: the head's
own diffbench, installed there by its ``.pth`` hook, stays out of the base's interpreter (checked, ``verify``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from diffbench.bench import provenance
from diffbench.core.errors import ConfigError

WORKING_TREE = "working tree"  # the ref of the running checkout, uncommitted changes included
# -P (3.11+): the working directory is not put first on sys.path, so a side started in a checkout that holds another
# diffbench (the head's, where the user stands) still imports its own; before 3.11 a side starts in its own folder
SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()


def start_dir(side_dir: Path) -> Path:
    """Where a side's processes start: the user's working directory (relative paths in --set mean what they mean
    to ``diffbench run``) where -P keeps it off sys.path, else the side's own folder."""
    return Path.cwd() if SAFE_PATH else side_dir


@dataclass(frozen=True)
class Checkout:
    """One side: the code at ``src`` (a commit's worktree, or the running checkout) run by ``python``."""

    name: str  # "base" or "head"
    ref: str  # as given ("main", "HEAD~1"), or WORKING_TREE
    commit: str
    dirty: bool  # uncommitted changes (only the running checkout can have them)
    src: Path
    python: Path
    env: dict[str, str] = field(repr=False)  # the environment of its processes
    made_here: bool = False  # a worktree and venv made for this A/B (removed at the end unless kept)

    @property
    def label(self) -> str:
        return f"{self.name} {self.commit[:10]}{' + uncommitted changes' if self.dirty else ''}"

    def command(self, *args: str) -> list[str]:
        return [str(self.python), *SAFE_PATH, "-m", "diffbench", *args]

    def describe(self) -> dict[str, object]:
        return {"ref": self.ref, "commit": self.commit, "dirty": self.dirty, "src": str(self.src),
                "python": str(self.python)}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ConfigError(f"git {' '.join(args[:2])} in {repo}: {last}")
    return done.stdout.strip()


def repository() -> Path:
    """The git checkout the running diffbench comes from (``ab`` takes its commits from there)."""
    root = provenance.REPO_ROOT
    if shutil.which("git") is None:
        raise ConfigError("diffbench ab needs git on PATH (it checks the base commit out in a git worktree)")
    if not provenance.is_own_checkout(root):
        raise ConfigError(f"diffbench ab needs diffbench's git checkout (pip install -e); this diffbench is installed "
                          f"from a package at {root}")
    return Path(_git(root, "rev-parse", "--show-toplevel")).resolve()


def resolve(repo: Path, ref: str) -> str:
    """The commit a ref names, or one line that says it does not name one."""
    if not ref or ref.startswith("-"):
        raise ConfigError(f"{ref!r} is not a git ref; give a branch, tag or commit such as main or HEAD~1")
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ConfigError(f"{ref!r} names no commit in {repo}; fetch it first (git fetch origin {ref}) or give a sha")
    return done.stdout.strip()


def _without_diffbench(pythonpath: str | None) -> str | None:
    """PYTHONPATH less the directories that hold a ``diffbench`` package: they would shadow the side's own."""
    if not pythonpath:
        return pythonpath
    kept = [p for p in pythonpath.split(os.pathsep) if p and not (Path(p) / "diffbench" / "__init__.py").is_file()]
    return os.pathsep.join(kept) or None


def _environ(pythonpath: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def running(name: str = "head") -> Checkout:
    """The checkout this diffbench runs from, uncommitted changes and all, with this interpreter."""
    root = provenance.REPO_ROOT
    commit, dirty = provenance.git_state(root)
    if commit is None:
        raise ConfigError(f"{root} is not a git checkout with a commit; diffbench ab compares commits")
    # the checkout first on the path: its processes import this code wherever they start
    path = os.pathsep.join(p for p in (str(root), _without_diffbench(os.environ.get("PYTHONPATH"))) if p)
    return Checkout(name, WORKING_TREE, commit, bool(dirty), root, Path(sys.executable), _environ(path))


def _venv_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _pip_install(python: Path, src: Path, cwd: Path, env: dict[str, str], log_file: Path) -> None:
    """``pip install -e src``: without build isolation first (the head's setuptools, no download), then with it."""
    for isolation in (["--no-build-isolation"], []):
        with log_file.open("a") as out:
            done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                   *isolation, "-e", str(src)], cwd=cwd, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=1800)
        if done.returncode == 0:
            return
    tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise ConfigError(f"pip could not install {src} beside the head ({tail[0][:300]}); see {log_file}")


def make(repo: Path, ref: str, name: str, where: Path) -> Checkout:
    """``ref``'s worktree at ``where/src`` and its venv at ``where/env``, linked to this interpreter's packages."""
    if importlib.util.find_spec("pip") is None:
        raise ConfigError(f"{sys.executable} has no pip; install it (python -m ensurepip) to set up the {name} side")
    commit = resolve(repo, ref)
    where.mkdir(parents=True, exist_ok=True)
    src, env_dir = where / "src", where / "env"
    _git(repo, "worktree", "add", "--quiet", "--detach", str(src), commit)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=300,
                       capture_output=True)
        python = _venv_python(env_dir)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        head_sites = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
        Path(purelib, "_diffbench_ab_head.pth").write_text("".join(f"{p}\n" for p in head_sites if Path(p).is_dir()))
        env = _environ(_without_diffbench(os.environ.get("PYTHONPATH")))
        _pip_install(python, src, where, env, where / "install.log")
    except BaseException:
        remove(repo, Checkout(name, ref, commit, False, src, Path(), {}, made_here=True))
        raise
    return Checkout(name, ref, commit, False, src.resolve(), python, env, made_here=True)


def verify(side: Checkout, cwd: Path) -> None:
    """The side's interpreter imports diffbench from the side's source, not from the head or an installed copy."""
    done = subprocess.run([str(side.python), *SAFE_PATH, "-c", "from diffbench.bench import provenance; "
                                                   "print(provenance.REPO_ROOT)"],
                          cwd=cwd, env=side.env, capture_output=True, text=True, timeout=300)
    got = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
    if not got or Path(got[0]).resolve() != side.src.resolve():
        why = f"imports diffbench from {got[0]}" if got else \
            f"cannot import diffbench ({(done.stderr.strip().splitlines() or ['no output'])[-1][:200]})"
        raise ConfigError(f"the {side.name} side's interpreter {side.python} {why}, not from {side.src}; "
                          "unset PYTHONPATH entries that hold another diffbench")


def remove(repo: Path, side: Checkout) -> None:
    """A worktree and venv made for an A/B, gone (the git worktree unregistered too)."""
    if not side.made_here:
        return
    if side.src.exists():
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(side.src)],
                       capture_output=True, timeout=300)
    shutil.rmtree(side.src, ignore_errors=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True, timeout=300)
    shutil.rmtree(side.src.parent / "env", ignore_errors=True)
