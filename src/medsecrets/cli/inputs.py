"""Bounded, strict reads of what a user hands the CLI: files, stdin and lines of stdin.

Every reader takes at most ``limit`` bytes (one more is read to tell a larger
input from one that fits, so ``/dev/zero`` or a huge file costs ``limit``
bytes of memory, not all of it), decodes UTF-8 strictly, and raises
``CliError`` with ``ExitCode.USAGE`` naming the source, never the content
(the content may be a secret).
"""

from __future__ import annotations

import io
import sys
import typing
from typing import BinaryIO, Final

from medsecrets.cli.errors import CliError, ExitCode

__all__ = ["MAX_INPUT_BYTES", "MAX_LINE_BYTES", "read_line", "read_text", "stdin_is_terminal"]

MAX_INPUT_BYTES: Final = 1 << 20
"""Default limit: the server's request body limit (nothing larger could be sent)."""
MAX_LINE_BYTES: Final = 64 * 1024
"""Limit of one line of stdin (a token, an unseal share)."""


def read_text(source: str, *, what: str, limit: int = MAX_INPUT_BYTES) -> str:
    """The whole text of the file ``source``, or of stdin when ``source`` is ``-``.

    ``what`` names the input in errors (``"field 'password'"``, ``"--provided"``).
    """
    name = "stdin" if source == "-" else source
    if source == "-":
        data = _read_up_to(_stdin(what), limit + 1)
    else:
        try:
            with open(source, "rb") as handle:
                data = _read_up_to(handle, limit + 1)
        except OSError as exc:
            raise CliError(
                f"{what}: cannot read {name}: {exc.strerror or type(exc).__name__}",
                ExitCode.USAGE,
            ) from None
    return _decoded(data, what=what, name=name, limit=limit)


def read_line(*, what: str, limit: int = MAX_LINE_BYTES) -> str:
    """One line of stdin without its line break (``""`` at end of input)."""
    data = _stdin(what).readline(limit + 1)
    if len(data) > limit and not data.endswith(b"\n"):
        raise CliError(f"{what}: the line on stdin is longer than {limit} bytes", ExitCode.USAGE)
    return _decoded(data, what=what, name="stdin", limit=limit).rstrip("\r\n")


def stdin_is_terminal() -> bool:
    """Whether standard input is a terminal (a closed one, ``<&-``, is not)."""
    return sys.stdin is not None and sys.stdin.isatty()


def _stdin(what: str) -> BinaryIO:
    """Standard input as bytes (a text stream without a buffer, as test runners give,
    is encoded back: ``surrogateescape`` restores bytes that were not UTF-8); a closed
    one (``<&-``, where Python has none) is a usage error naming ``what``."""
    if sys.stdin is None:
        raise CliError(f"{what}: stdin is closed", ExitCode.USAGE)
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return typing.cast(BinaryIO, buffer)
    return io.BytesIO(sys.stdin.read().encode("utf-8", "surrogateescape"))


def _read_up_to(handle: BinaryIO, size: int) -> bytes:
    """At most ``size`` bytes of ``handle`` (reads until it has them or the input ends)."""
    chunks: list[bytes] = []
    left = size
    try:
        while left > 0:
            chunk = handle.read(min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise CliError(
            f"cannot read input: {exc.strerror or type(exc).__name__}", ExitCode.USAGE
        ) from None
    return b"".join(chunks)


def _decoded(data: bytes, *, what: str, name: str, limit: int) -> str:
    if len(data) > limit:
        raise CliError(f"{what}: {name} is larger than {_size(limit)}", ExitCode.USAGE)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{what}: {name} is not UTF-8 text", ExitCode.USAGE) from None


def _size(limit: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"
