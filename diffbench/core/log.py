"""diffbench's messages that are not a command's result: notes, warnings and progress detail, through the
``diffbench`` logger on stderr (a command's result, its table or JSON, is printed on stdout).

Levels: ``--quiet`` shows warnings and errors only; the default adds notes (INFO); ``--verbose`` adds each case's
start and end (DEBUG). A library user configures the ``diffbench`` logger as they would any other.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("diffbench")


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (a caller that redirects it, as the tests do, gets the
    messages)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.DEBUG: "debug: "}.get(record.levelno,
                                                                                                      "note: ")
        return f"diffbench: {kind}{' '.join(record.getMessage().split())}"


def configure(verbosity: int) -> None:
    """-1 quiet, 0 default, 1 verbose: the level of the stderr handler the CLI installs (once)."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logger.setLevel(level)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(_Format())
        logger.addHandler(handler)
        logger.propagate = False
