"""The ``diffbench`` command line: a thin shell over library functions.

Each command lives in ``bench/commands/`` and registers itself with :func:`command`; this
module only parses, dispatches and turns user errors into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffbench.core.errors import UnknownNameError, UserError
from diffbench.core.registry import Registry

PROG = "diffbench"
COMMAND_MODULES = tuple(f"diffbench.bench.commands.{m}" for m in (
    "listing", "counting", "matching", "running", "quality", "reporting", "pipelines", "comparing"))


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    examples: tuple[str, ...]
    args: tuple[Arg, ...]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: Registry[Command] = Registry("command", "CLI commands")


def command(name: str, help: str, examples: Sequence[str], args: Sequence[Arg] = ()) -> Callable[..., Any]:
    """Register ``run(args) -> exit status`` as a subcommand; ``examples`` end its ``--help``."""

    def deco(run: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int | None]:
        COMMANDS.add(name, Command(name, help, tuple(examples), tuple(args), run))
        return run

    return deco


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line user errors instead of usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "invalid choice" in message and "COMMAND" in message:
            bad = message.split("invalid choice: ")[1].split(" ")[0].strip("'\"")
            raise UnknownNameError(COMMANDS.unknown_message(bad) + f"; see '{PROG} --help'")
        raise UserError(f"{message} (see '{self.prog} --help')")


def _examples(lines: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    from diffbench.bench.provenance import diffbench_version

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = _Parser(
        prog=PROG,
        description="Benchmark diffusion backbones and pipelines at matched size: counts, speed, memory, "
                    "energy, quality, scaling-law reports.",
        epilog=_examples([f"{PROG} list presets", f"{PROG} count DiT-XL/2 U-ViT-H/2", f"{PROG} list"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {diffbench_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, epilog=_examples(cmd.examples),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for a in cmd.args:
            p.add_argument(*a.flags, **a.options)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 0
        return int(args._run(args) or 0)
    except UserError as e:
        message = " ".join(str(e).split())  # always one line
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `diffbench list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
