"""``StdoutAuditDevice``: audit records as lines on standard output (for containers).

``write`` writes the record lines unchanged (one JSON object per line) and
flushes: "durably accepted" means handed to the stream's file descriptor,
where the container runtime collects it. A failed write or flush (a closed
stream, ``EPIPE``, ``ENOSPC``) raises ``AuditFailure``. The stream is only
borrowed: ``close`` flushes it but never closes it.

A process started with its standard output closed (``server >&-``) has no
``sys.stdout``: ``open`` still succeeds and every ``write`` raises
``AuditFailure`` ("standard output is closed"), so an optional device is
just down (and a required one fails closed), never a crash at start.

This device cannot read records back: ``open`` returns ``ChainHead()``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import BinaryIO

from medsecrets.audit.device import ChainHead
from medsecrets.errors import AuditFailure

__all__ = ["StdoutAuditDevice"]


class StdoutAuditDevice:
    """An ``AuditDevice`` that writes records to a binary stream (see module docstring)."""

    def __init__(self, name: str, *, stream: BinaryIO | None = None) -> None:
        """Write to ``stream`` (default: ``sys.stdout.buffer`` as it is at ``open``)."""
        self._name = name
        self._given = stream
        self._stream: BinaryIO | None = None
        self._open = False

    def __repr__(self) -> str:
        return f"StdoutAuditDevice({self._name!r})"

    @property
    def name(self) -> str:
        """The device's configured name."""
        return self._name

    def open(self) -> ChainHead:
        """Bind the stream (none if standard output is closed); a new chain: ``ChainHead()``."""
        if self._given is not None:
            self._stream = self._given
        else:  # ``None`` with fd 1 closed at start; no ``buffer`` if replaced by a text stream
            self._stream = getattr(sys.stdout, "buffer", None)
        self._open = True
        return ChainHead()

    def write(self, lines: Sequence[bytes]) -> None:
        """Write all of ``lines`` (looping over short writes) and flush.

        Raises ``AuditFailure`` if the stream refuses (including a
        non-blocking stream that cannot take more).
        """
        stream = self._stream
        if not self._open:
            raise AuditFailure(f"audit device {self._name!r} is not open")
        if stream is None:
            raise AuditFailure(
                f"audit device {self._name!r}: write failed: standard output is closed"
            )
        data = memoryview(b"".join(lines))
        try:
            while data:
                written = stream.write(data)
                if not written:  # a non-blocking stream that is full
                    raise BlockingIOError
                data = data[written:]
            stream.flush()
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError):
                reason = exc.strerror or type(exc).__name__
            else:
                reason = "the stream is closed"
            raise AuditFailure(f"audit device {self._name!r}: write failed: {reason}") from None

    def close(self) -> None:
        """Flush and release the stream without closing it (idempotent)."""
        stream, self._stream, self._open = self._stream, None, False
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # ``write`` flushed already
                stream.flush()
