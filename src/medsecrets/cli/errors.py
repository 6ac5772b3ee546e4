"""Exit codes of the ``medsecrets`` CLI and the one place that turns errors into them.

Every failure ends the process with ONE line on stderr, ``error: <message>``,
and a documented exit code; never a stack trace (set ``MEDSECRETS_DEBUG=1`` to
get one). Messages come from the error tree (server messages name the rule,
path or field, never a value) or from the CLI itself, which never echoes an
argument that may hold a secret.

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     any other error: server unreachable, provider or audit failure, bug
2     usage: bad command line, or input the server rejected (400, 413, 422)
3     not found: no such secret, version, stage, field, category or token
4     unauthenticated or permission denied (401, 403)
5     the server is sealed or not initialised (503)
6     conflict: check-and-set lost, exists already, already initialised,
      scheduled for deletion (409, 410)
7     ``audit verify``: the log was modified, reordered, truncated or forged
====  ==========================================================================
"""

from __future__ import annotations

import enum
import importlib
from types import ModuleType

from medsecrets.errors import (
    AlreadyInitializedError,
    AuthenticationError,
    ConflictError,
    InvalidRequest,
    MedsecretsError,
    NotFoundError,
    NotInitializedError,
    PermissionDenied,
    ScheduledForDeletion,
    SealedError,
)

__all__ = ["EXIT_CODE_TABLE", "CliError", "ExitCode", "click_module", "exit_code_for"]


class ExitCode(enum.IntEnum):
    """The documented exit codes (see the module docstring)."""

    OK = 0
    OTHER = 1
    USAGE = 2
    NOT_FOUND = 3
    DENIED = 4
    SEALED = 5
    CONFLICT = 6
    VERIFY_FAILED = 7


_BY_TYPE: tuple[tuple[type[MedsecretsError], ExitCode], ...] = (
    (NotFoundError, ExitCode.NOT_FOUND),
    (AuthenticationError, ExitCode.DENIED),
    (PermissionDenied, ExitCode.DENIED),
    (SealedError, ExitCode.SEALED),
    (NotInitializedError, ExitCode.SEALED),
    (ConflictError, ExitCode.CONFLICT),
    (AlreadyInitializedError, ExitCode.CONFLICT),
    (ScheduledForDeletion, ExitCode.CONFLICT),
    (InvalidRequest, ExitCode.USAGE),
)
"""The one error type → exit code table; first match wins, anything else is 1."""

EXIT_CODE_TABLE = (
    "Exit codes: 0 ok · 1 other error (e.g. server unreachable) · 2 usage or rejected input · "
    "3 not found · 4 unauthenticated or denied · 5 sealed or not initialised · "
    "6 conflict (check-and-set, exists, scheduled for deletion) · "
    "7 audit verification failed (the log was tampered with or truncated)."
)
"""The table in one paragraph, for ``--help`` epilogs."""


class CliError(Exception):
    """A failure detected by the CLI itself; ``message`` must never hold a secret value."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.OTHER) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code for ``error`` (``CliError`` carries its own)."""
    if isinstance(error, CliError):
        return error.exit_code
    for error_type, code in _BY_TYPE:
        if isinstance(error, error_type):
            return code
    return ExitCode.OTHER


def click_module() -> ModuleType:
    """The Click that Typer runs on: Typer 0.2x vendors it as ``typer._click``, older
    releases use ``click`` itself. Its exception classes are what the CLI must catch."""
    try:
        return importlib.import_module("typer._click")
    except ImportError:  # pragma: no cover - depends on the installed Typer
        return importlib.import_module("click")
