"""The ``medsecrets`` command line (Typer + Rich), built on the SDK.

Entry point: ``medsecrets.cli.app:main`` (console script ``medsecrets``; also
``python -m medsecrets.cli``). Exit codes are documented in
``medsecrets.cli.errors`` and ``docs/cli.md``.

Ctrl-C ends a command quietly with 130 (shells show ``^C``), never with a stack
trace: ``main`` returns 130, and importing this package makes a Ctrl-C that lands
while the CLI is still starting (importing Typer, Rich and the commands takes
about a second, before ``main`` can catch anything) quiet too. Only an unhandled
``KeyboardInterrupt`` is changed; the process then still ends by SIGINT.
"""

from __future__ import annotations

import sys
from types import TracebackType

_previous_hook = sys.excepthook


def _interrupted_hook(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        return
    _previous_hook(kind, value, traceback)


sys.excepthook = _interrupted_hook
