"""How the CLI prints: Rich tables for people, JSON for machines, bare values for scripts.

Everything a command prints goes through here. Results are first turned into
their JSON wire form (``medsecrets.wire.to_wire``), so ``--output json``
prints exactly what the HTTP API returns and the table renderers read plain
dicts. Text that came from the server or the user is never interpreted as Rich
markup. Secret values are printed only by the commands that were asked for
them (``secrets get``, ``generate``, ``operator init/rekey``, ``token create``).
"""

from __future__ import annotations

import enum
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from medsecrets.cli.errors import CliError
from medsecrets.wire import JSON, to_wire

__all__ = [
    "GetFormat",
    "OutputFormat",
    "cell",
    "emit_json",
    "env_lines",
    "error",
    "kv_table",
    "note",
    "one_line",
    "out",
    "print_table",
    "result_stream",
    "rows_table",
    "warn",
    "wire",
    "write_line",
]


class OutputFormat(enum.StrEnum):
    """``--output`` of most commands."""

    table = "table"
    json = "json"


class GetFormat(enum.StrEnum):
    """``--output`` of ``secrets get``: also ``env`` (``KEY=value`` lines)."""

    table = "table"
    json = "json"
    env = "env"


@contextmanager
def result_stream() -> Iterator[TextIO]:
    """Standard output, to print a result on; flushed at the end.

    A result that cannot be printed is a failure, never a quiet success: a closed
    stdout (``>&-``, where Python has none) or a failed write (``> /dev/full``) is a
    ``CliError`` (exit 1). A closed pipe (``| head``) stays ``BrokenPipeError``.
    """
    stream = sys.stdout
    if stream is None:
        raise CliError("cannot print the result: standard output is closed")
    try:
        yield stream
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise CliError(f"cannot print the result: {exc.strerror or type(exc).__name__}") from None


def require_result_stream() -> None:
    """``CliError`` now when standard output is closed: for a command whose result is
    shown once (unseal shares, a root token, a new token), before the server makes it."""
    with result_stream():
        pass


PIPE_WIDTH = 4096
"""The width of a console on a pipe or file without ``COLUMNS``: a table keeps its natural
width, each row on one line (folded at 80 columns, ``... | grep <path>`` missed paths)."""


def out(stream: TextIO) -> Console:
    """A console on ``stream``: a terminal's width; not a terminal, ``COLUMNS`` if set, else
    ``PIPE_WIDTH`` (tables are never wider than their content)."""
    width = None
    if "COLUMNS" not in os.environ and not _isatty(stream):
        width = PIPE_WIDTH
    return Console(file=stream, highlight=False, soft_wrap=False, width=width)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed: whatever writes to it reports that
        return False


def wire(value: object) -> JSON:
    """The JSON wire form of ``value`` (dataclasses, mappings, sequences, scalars)."""
    return to_wire(value)


def emit_json(value: object) -> None:
    """Print ``value``'s wire form as indented JSON on stdout (a lone surrogate, which a
    server must not send and UTF-8 cannot carry, as its ``\\uNNNN`` escape: the same JSON)."""
    text = json.dumps(wire(value), indent=2, ensure_ascii=False)
    with result_stream() as stream:
        stream.write(_LONE_SURROGATE.sub(_escaped, text) + "\n")


def emit(value: object, output: OutputFormat, show: Callable[[], None]) -> None:
    """The command's result: the wire JSON of ``value`` for ``--output json``, else ``show()``."""
    if output is OutputFormat.json:
        emit_json(value)
    else:
        show()


def write_line(text: str) -> None:
    """Print ``text`` verbatim (no markup, no wrapping) and a newline on stdout."""
    with result_stream() as stream:
        stream.write(text + "\n")


def cell(value: JSON) -> Text:
    """One table cell: ``-`` for null/empty, lists joined, objects as ``k=v``; never markup,
    and never a terminal control sequence (control characters but line breaks and tabs are
    shown as ``\\xNN``: a value or description must not clear the screen or retitle it)."""
    if value is None or value in ("", [], {}):
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        return Text(", ".join(str(cell(v)) for v in value))
    if isinstance(value, dict):
        return Text(", ".join(f"{visible(str(k))}={cell(v)}" for k, v in value.items()))
    return Text(visible(str(value)))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_BREAKS_AND_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every C0/C1 control character but ``\\n`` and ``\\t`` as ``\\xNN``,
    and a lone surrogate (text that is not Unicode, which no terminal encoding can
    carry: a server must not send it) as ``\\uNNNN``."""
    return _CONTROL.sub(_escaped, text)


def one_line(text: str) -> str:
    """``visible(text)`` with line breaks, tabs and the Unicode line and paragraph separators
    escaped too: a status line stays one line, and a file name or a server message cannot
    move the cursor or retitle the terminal."""
    return _BREAKS_AND_CONTROL.sub(_escaped, text)


def kv_table(title: str | None, data: Mapping[str, JSON], *, keys: Sequence[str] = ()) -> Table:
    """A two-column table of ``data`` (only ``keys``, in that order, when given)."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key in keys or tuple(data):
        if key in data:
            table.add_row(Text(key), cell(data[key]))
    return table


def rows_table(
    title: str | None,
    rows: Iterable[Mapping[str, JSON]],
    columns: Sequence[str],
    *,
    headers: Sequence[str] = (),
) -> Table:
    """A table with one row per mapping, showing ``columns`` (headed by ``headers``)."""
    table = Table(title=title, title_justify="left")
    for header in headers or columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    return table


def print_table(*tables: Table | Text | str) -> None:
    """Render tables (and plain lines) on stdout."""
    with result_stream() as stream:
        console = out(stream)
        for item in tables:
            console.print(Text(item) if isinstance(item, str) else item)


def check_env_prefix(prefix: str) -> None:
    """``ValueError`` unless ``prefix`` can start a shell variable name (see ``env_lines``)."""
    if prefix and (not prefix.isascii() or not _SHELL_NAME.fullmatch(prefix)):
        raise ValueError(
            f"{prefix!r} cannot start a shell variable name (ASCII letters, digits and _, "
            "not starting with a digit)"
        )


def env_lines(fields: Mapping[str, str], *, prefix: str = "") -> list[str]:
    """``KEY=value`` lines (shell-quoted values; keys upper-cased, ``-``/``.`` → ``_``).

    Raises ``ValueError`` (naming the key, never a value) when a key is not a shell
    variable name (a ``--env-prefix`` such as ``A;`` would make the line a command).
    """
    lines = []
    for name, value in fields.items():
        key = (prefix + name).upper().replace("-", "_").replace(".", "_")
        if not key.isascii() or not _SHELL_NAME.fullmatch(key):
            raise ValueError(
                f"{key!r} is not a shell variable name (ASCII letters, digits and _, "
                "not starting with a digit)"
            )
        lines.append(f"{key}={shlex.quote(value)}")
    return lines


def _stderr_line(line: str) -> None:
    """``line`` as ONE line on stderr (``one_line``); nothing when stderr is closed."""
    stream = sys.stderr
    if stream is None:
        return
    stream.write(one_line(line) + "\n")
    stream.flush()


def note(message: str) -> None:
    """One status line on stderr, for a command whose result went elsewhere (a file that
    may be ``/dev/stdout``: stdout carries only the result)."""
    _stderr_line(message)


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (never a secret value)."""
    _stderr_line(f"warning: {message}")


def error(message: str) -> None:
    """The one ``error: ...`` line of a failure on stderr (never a secret value)."""
    _stderr_line(f"error: {message}")
