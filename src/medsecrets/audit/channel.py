"""Framed messages between a server process and its audit process, over a pipe.

A message is a tuple whose first item names it, of builtin values only
(``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, tuples, lists and
dicts of them), encoded with ``marshal`` and framed by a 4-byte little-endian
length. ``marshal`` is used because it is the fastest codec for these values;
it is safe here because both ends are medsecrets processes of the same
interpreter talking over a pipe nobody else holds (it must never read data
from elsewhere). A frame larger than ``MAX_FRAME`` is refused on both sides; a
reader may set a lower limit of its own (``FrameReader(max_frame=)``), checked
on a frame's length before any of its body is buffered.

``encode(message)`` gives the bytes of one frame; ``FrameReader`` reads frames
from a file descriptor: ``read()`` (blocking descriptor) returns the next batch
of whole messages, never ``[]`` (it blocks until at least one arrives);
``read_ready()`` (non-blocking descriptor) reads what is there and returns the
whole messages it completes, maybe ``[]``. Both raise ``EOFError`` at the end of
the stream (a torn last frame included).
"""

from __future__ import annotations

import marshal
import os
import struct
from typing import Any, Final

__all__ = ["MAX_FRAME", "FrameError", "FrameReader", "Message", "encode"]

MAX_FRAME: Final = 256 << 20
"""The largest frame (bytes) either side accepts."""

_LENGTH: Final = struct.Struct("<I")

Message = tuple[object, ...]


class FrameError(Exception):
    """A frame that is too large or does not decode to a message."""


def cast_any(value: object) -> Any:
    """``value`` for ``marshal`` (whose stub accepts a narrower type than it handles)."""
    return value


def encode(message: Message) -> bytes:
    """The frame of ``message`` (``FrameError`` if it is too large or not builtin values)."""
    try:
        body = marshal.dumps(cast_any(message))
    except ValueError as exc:  # an object marshal does not know
        raise FrameError(f"message cannot be framed ({exc})") from None
    if len(body) > MAX_FRAME:
        raise FrameError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Reads whole messages from ``fd`` (see module docstring). Not thread-safe."""

    def __init__(self, fd: int, *, chunk: int = 1 << 20, max_frame: int = MAX_FRAME) -> None:
        self._fd = fd
        self._max_frame = min(max_frame, MAX_FRAME)
        # Read into one buffer kept for good: ``os.read(fd, 1 MiB)`` allocates (and maps,
        # then unmaps) a fresh MiB each call, ~15 µs against ~1 µs (measured).
        self._scratch = bytearray(chunk)
        self._view = memoryview(self._scratch)
        self._buffer = bytearray()

    def __repr__(self) -> str:
        return f"FrameReader(fd={self._fd}, buffered={len(self._buffer)})"

    def read(self) -> list[Message]:
        """The messages of the next read (at least one); ``EOFError`` at the end."""
        while True:
            found = self._split()
            if found:
                return found
            if not self._fill():
                raise EOFError("the other process closed the pipe")

    def read_ready(self) -> list[Message]:
        """The messages completed by what can be read now (non-blocking ``fd``)."""
        try:
            filled = self._fill()
        except BlockingIOError:
            return self._split()
        if not filled:
            raise EOFError("the other process closed the pipe")
        return self._split()

    def _fill(self) -> int:
        """Read once into the buffer; the number of bytes read (0 at the end)."""
        size = os.readv(self._fd, [self._scratch])
        self._buffer += self._view[:size]
        return size

    def _split(self) -> list[Message]:
        buffer = self._buffer
        limit = self._max_frame
        found: list[Message] = []
        at = 0
        while len(buffer) - at >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, at)
            if size > limit:
                raise FrameError(f"frame of {size} bytes is over the {limit}-byte limit")
            end = at + _LENGTH.size + size
            if len(buffer) < end:
                break
            try:
                # Safe: only our own child or parent writes this pipe (module docstring).
                message = marshal.loads(bytes(buffer[at + _LENGTH.size : end]))  # noqa: S302
            except (ValueError, EOFError, TypeError):
                raise FrameError("a frame that is not a message") from None
            if not isinstance(message, tuple) or not message:
                raise FrameError("a frame that is not a message")
            found.append(message)
            at = end
        if at:
            del buffer[:at]
        return found
