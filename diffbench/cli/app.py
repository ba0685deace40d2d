"""The ``diffbench`` command line: a thin shell over library functions.

Each command lives in ``diffbench/cli/commands/`` and registers itself with :func:`command`; this
module only parses, dispatches and turns user errors into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffbench.bench.catalog import LISTINGS, Listing
from diffbench.core import distributed, log
from diffbench.core.errors import ConfigError, UnknownNameError, UserError
from diffbench.core.registry import Registry
from diffbench.core.version import diffbench_version

PROG = "diffbench"
COMMAND_MODULES = tuple(f"diffbench.cli.commands.{m}" for m in (
    "listing", "counting", "matching", "running", "quality", "reporting", "pipelines", "data", "comparing",
    "caching"))


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


# --- argument types: argparse calls them on the text; a bad value becomes a one-line usage error --------
# ``x <= 0`` is False for NaN and ``float("inf")`` parses, so every number is checked for finiteness first.

def number(kind: type = float, minimum: float | None = None, above: float | None = None,
           below: float | None = None) -> Callable[[str], Any]:
    """A finite int or float, optionally ``>= minimum``, ``> above`` and ``< below``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than {above:g}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"{text!r} must be less than {below:g}")
        return value

    parse.__name__ = "integer" if kind is int else "number"  # argparse names the type in its messages
    return parse


positive_int = number(int, minimum=1)
non_negative_int = number(int, minimum=0)
positive_float = number(float, above=0)
non_negative_float = number(float, minimum=0)
seed_int = number(int, minimum=0, below=2 ** 32)  # numpy's seeds end at 2**32 - 1


def names(text: str) -> list[str]:
    """A comma-separated list with at least one non-empty item."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give one or more comma-separated values")
    return items


names.__name__ = "list"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    examples: tuple[str, ...]
    args: tuple[Arg, ...]
    run: Callable[[argparse.Namespace], int | None]
    distributed: bool = False  # runs under torchrun: its work is split over the ranks, rank 0 writes


COMMANDS: Registry[Command] = Registry("command", "CLI commands")
# the CLI adds its own commands to what 'diffbench list' shows (the catalog below it knows no command)
LISTINGS.add("commands", Listing("commands", "CLI commands", ("name", "description"),
                                 lambda: [{"name": n, "description": c.help} for n, c in COMMANDS.items()]))


def command(name: str, help: str, examples: Sequence[str], args: Sequence[Arg] = (),
            distributed: bool = False) -> Callable[..., Any]:
    """Register ``run(args) -> exit status`` as a subcommand; ``examples`` end its ``--help``; ``distributed``:
    it runs under torchrun."""

    def deco(run: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int | None]:
        COMMANDS.add(name, Command(name, help, tuple(examples), tuple(args), run, distributed))
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
    # -v/-q before or after the command: notes, warnings and per-case detail on stderr (diffbench/core/log.py)
    common = _Parser(add_help=False)
    loud = common.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", default=argparse.SUPPRESS,
                      help="also each case's start and end, and other detail, on stderr")
    loud.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=argparse.SUPPRESS,
                      help="warnings and errors only (no notes, no progress bar)")
    for action in common._actions:
        parser._add_action(action)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, epilog=_examples(cmd.examples),
                           formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
        for a in cmd.args:
            p.add_argument(*a.flags, **a.options)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        log.configure(getattr(args, "verbosity", 0))
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 0
        if distributed.from_env().is_distributed and not COMMANDS.get(args.command).distributed:
            allowed = ", ".join(n for n, c in COMMANDS.items() if c.distributed)
            raise ConfigError(f"'diffbench {args.command}' does not run under torchrun; only {allowed} do (a suite "
                              "spreads over devices with 'diffbench run --devices' or --launcher)")
        world, device = distributed.init(getattr(args, "device", "cpu"))
        if world.is_distributed:  # under torchrun: this rank's device; only rank 0 prints and writes
            args.device = device
            distributed.quiet_unless_writer(world)
        try:
            code = int(args._run(args) or 0)
        except BaseException:
            if world.is_distributed:
                distributed.finish(barrier=False)  # torchrun stops the other ranks
            raise
        if world.is_distributed:
            distributed.finish()
        return code
    except UserError as e:
        message = " ".join(str(e).split())  # always one line
        if _is_writer():  # under torchrun every rank fails alike: rank 0 alone says so (torchrun's report follows)
            print(f"{PROG}: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `diffbench list | head`
        return 0
    except OSError as e:  # disk full, permission denied, read-only file system: the environment, not a bug
        where = f": {e.filename}" if e.filename else ""
        print(f"{PROG}: error: {e.strerror or type(e).__name__}{where}; free space or choose another path",
              file=sys.stderr)
        return 2


def _is_writer() -> bool:
    try:
        return distributed.from_env().is_writer
    except UserError:  # RANK/WORLD_SIZE themselves are wrong: say so from every process
        return True


if __name__ == "__main__":
    sys.exit(main())
