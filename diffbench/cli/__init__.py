"""The ``diffbench`` command line, above the API: each command parses its arguments, calls one function of
:mod:`diffbench.api` and prints what it returns. Nothing in the package imports this but ``__main__`` and
the ``diffbench`` script (tests/test_architecture.py)."""

from diffbench.cli.app import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
