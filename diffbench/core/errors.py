"""User errors: mistakes a user can fix, shown by the CLI as one line with exit status 2.

Anything that is *not* a ``UserError`` is a bug or a fault inside a case and keeps its
traceback. Part of the bottom layer (``diffbench.core``): every module may import it.
"""

from __future__ import annotations

import importlib


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """A malformed or impossible configuration (suite file, CLI option, model config)."""


class UnknownNameError(UserError, KeyError):
    """A name that no registry holds."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FamilyError(ConfigError):
    """A backbone family from outside diffbench that breaks the family contract (``models/family.py``): the message
    names the family and the fault. Inside a suite it ends that family's cases, not the suite."""


class BadInputError(UserError):
    """An input file or tensor that cannot be used as given (format, dtype, shape, range)."""


class MissingWeightsError(UserError):
    """A weights file that is absent or does not match its published hash."""


class CaseUnsupported(Exception):
    """Raised inside a case for a setting this device cannot run (tf32 on CPU, ...): status ``unsupported``."""


class MissingExtraError(UserError):
    """An optional dependency that is not installed; the message names the extra that brings it."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the optional '{extra}' dependencies: pip install 'diffbench[{extra}]'")


def require(module: str, what: str, extra: str) -> object:
    """Import an optional dependency, or raise a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(what, extra) from None
