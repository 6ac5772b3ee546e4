"""``DurableSpool``: a bounded, append-only, crash-safe queue of lines on disk.

The HTTP forwarder's "durable accept": ``append`` returns only after its lines
are fsync'd, and a consumer ships them later with ``peek`` / ``ack``. One
producer thread and one consumer thread may use a spool at once (every method
is thread-safe); one process at a time holds a spool directory (an exclusive
``flock`` on ``LOCK``; a second opener gets ``SpoolBusyError``).

Layout of ``directory`` (0700, files 0600)::

    LOCK                      held while the spool is open
    cursor                    "<segment> <offset>\\n": the first unacknowledged byte
    00000000000000000001.seg  segments: whole lines, appended in order
    00000000000000000002.seg

The directory must be new, empty or a spool (it holds ``LOCK``): any other
directory is refused (``SpoolError``), never taken over or chmod'ed. Every
file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file:
a symlink, FIFO or directory put in a file's place is refused with a
``SpoolError`` naming it (never followed, read or truncated).

Contract:

- A line is bytes ending in ``\\n`` with no other ``\\n`` (``ValueError``
  otherwise). ``peek`` returns lines exactly as appended, oldest first.
- ``append`` is all-or-nothing: it raises ``SpoolFullError`` when the segment
  files would grow past ``max_bytes`` (nothing written), and ``SpoolError``
  when the write or fsync fails (the partial write is cut off again).
- ``max_bytes`` bounds the bytes of segment files on disk. Acknowledged bytes
  are reclaimed when their whole segment is consumed (the segment is deleted),
  so up to one segment (``segment_bytes``) of acknowledged lines may still
  count against it.
- ``ack(n)`` durably moves the read position past the next ``n`` lines
  (atomic rename of ``cursor``, then fsync of the directory) and deletes
  fully consumed segments. An acknowledged line is never returned again, also
  after a restart; an unacknowledged one always is (delivery is at least once).
- ``peek(max_lines, max_bytes)`` stops before the line that would take the
  batch past ``max_bytes``, but always returns at least one line when any is
  pending (a line longer than ``max_bytes`` comes alone).
- Reopening a spool continues at the acknowledged position. A torn last line
  (the process died during ``append``: the caller was never told it was
  accepted) is discarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from medsecrets.errors import AuditFailure
from medsecrets.fdio import write_all

__all__ = ["DurableSpool", "SpoolBusyError", "SpoolError", "SpoolFullError", "unusable_reason"]

_SUFFIX: Final = ".seg"
_CURSOR: Final = "cursor"
_LOCK: Final = "LOCK"
_CHUNK: Final = 1 << 16
_MAX_SEGMENT: Final = 8 << 20
_MAX_CURSOR: Final = 64
_NOT_SPOOL_OK: Final = frozenset({"lost+found"})  # a spool on its own file system


class SpoolError(AuditFailure):
    """The spool could not durably store, read or acknowledge lines."""

    code = "audit_spool_error"

    def __init__(self, message: str = "audit spool failed") -> None:
        super().__init__(message)


class SpoolFullError(SpoolError):
    """The spool is full: the lines were refused (nothing was written)."""

    code = "audit_spool_full"

    def __init__(self, message: str = "audit spool is full") -> None:
        super().__init__(message)


class SpoolBusyError(SpoolError):
    """Another process holds the spool directory (its ``LOCK``)."""

    def __init__(self, message: str = "audit spool is in use by another process") -> None:
        super().__init__(message)


@dataclass(frozen=True, slots=True, order=True)
class _Position:
    """A byte position: ``offset`` bytes into segment ``segment``."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class _Peeked:
    """What the last ``peek`` read: from ``start``, the position after each line."""

    start: _Position
    ends: tuple[_Position, ...]


def _make_private(directory: Path) -> None:
    """Create ``directory`` and any missing parent 0700 (``mkdir(parents=True)`` makes the
    parents with the umask's mode: ``<data_dir>/audit-spool`` was 0755); a directory that
    exists already is left as it is."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile: as exist_ok=True
            path.mkdir(mode=0o700)


class DurableSpool:
    """A durable queue of lines in ``directory`` (see module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int | None = None,
        create: bool = True,
    ) -> None:
        """Open (or create) the spool in ``directory``; repairs a torn tail.

        ``segment_bytes`` (default: an eighth of ``max_bytes``, at most 8 MiB)
        is the size after which appends start a new segment file. With
        ``create=False`` only an existing spool is opened (one that holds
        ``LOCK``; ``SpoolError`` otherwise). ``SpoolBusyError`` when another
        process holds it.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes or max(4096, min(max_bytes // 8, _MAX_SEGMENT))
        self._lock = threading.Lock()
        self._closed = False
        self._broken = False
        self._peeked: _Peeked | None = None
        self._lock_fd = self._acquire_directory(create)
        try:
            self._sizes: dict[int, int] = {}
            for segment in self._list_segments():
                self._sizes[segment] = self._repair(segment)
            self._total = sum(self._sizes.values())
            self._cursor = self._load_cursor()
            self._drop_consumed()
            self._pending = self._count_pending()
        except OSError as exc:
            os.close(self._lock_fd)
            raise self._failure("open failed", exc) from None
        except BaseException:
            os.close(self._lock_fd)
            raise

    def __repr__(self) -> str:
        return f"DurableSpool({str(self._dir)!r}, pending={self._pending})"

    # -- public API ---------------------------------------------------------------------------

    @property
    def max_bytes(self) -> int:
        """The bound on the bytes of segment files."""
        return self._max_bytes

    @property
    def size_bytes(self) -> int:
        """Bytes of segment files on disk (what ``max_bytes`` bounds)."""
        with self._lock:
            return self._total

    def pending(self) -> int:
        """Lines appended and not yet acknowledged."""
        with self._lock:
            return self._pending

    def append(self, lines: Sequence[bytes]) -> None:
        """Durably append ``lines`` (all or none; see module docstring)."""
        for line in lines:
            if not line or line.find(b"\n") != len(line) - 1:
                raise ValueError("a spool line ends with one newline and contains no other")
        data = b"".join(lines)
        if not data:
            return
        with self._lock:
            self._check_open()
            if self._broken:
                raise SpoolError(f"audit spool {self._dir} failed earlier; reopen it")
            if self._total + len(data) > self._max_bytes:
                raise SpoolFullError(
                    f"audit spool {self._dir} is full "
                    f"({self._total} of {self._max_bytes} bytes, {self._pending} lines pending)"
                )
            try:
                segment = self._active_segment()
            except OSError as exc:
                raise self._failure("append failed", exc) from None
            self._write_durably(segment, data)
            self._sizes[segment] = self._sizes.get(segment, 0) + len(data)
            self._total += len(data)
            self._pending += len(lines)

    def peek(self, max_lines: int, max_bytes: int | None = None) -> list[bytes]:
        """Up to ``max_lines`` unacknowledged lines, oldest first (each ends in ``\\n``).

        With ``max_bytes``, at most that many bytes, but at least one line (see
        module docstring).
        """
        if max_lines <= 0:
            return []
        with self._lock:
            self._check_open()
            start = self._cursor
            sizes = dict(self._sizes)
        lines, ends = self._read(start, sizes, max_lines, max_bytes)
        with self._lock:
            if self._cursor == start:
                self._peeked = _Peeked(start, tuple(ends))
        return lines

    def ack(self, n: int) -> None:
        """Durably consume the next ``n`` lines (``ValueError`` if fewer are pending)."""
        if n <= 0:
            return
        with self._lock:
            self._check_open()
            if n > self._pending:
                raise ValueError(f"cannot acknowledge {n} lines: {self._pending} pending")
            start, sizes, peeked = self._cursor, dict(self._sizes), self._peeked
        if peeked is not None and peeked.start == start and n <= len(peeked.ends):
            end = peeked.ends[n - 1]
        else:
            end = self._read(start, sizes, n)[1][-1]
        # The cursor is stored under the lock: an append in between could otherwise
        # extend a segment that this acknowledgement is about to delete.
        with self._lock:
            end = self._normalise(end)
            try:
                self._store_cursor(end)
            except OSError as exc:
                raise self._failure("acknowledgement failed", exc) from None
            self._cursor = end
            self._peeked = None
            self._pending -= n
            with contextlib.suppress(OSError):  # deleted again by the next ack or open
                self._drop_consumed()

    def close(self) -> None:
        """Release the directory lock (idempotent). Everything appended is on disk already."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._lock_fd)

    def remove(self) -> None:
        """Delete the spool (its files, then its directory if nothing else is left) and close it.

        Only an empty spool is removed: ``SpoolError`` while lines are pending
        (and the spool stays open). The files go while the lock is still held,
        so no other process can be using them.
        """
        with self._lock:
            self._check_open()
            if self._pending:
                raise SpoolError(f"audit spool {self._dir}: {self._pending} lines still pending")
            try:
                for segment in self._sizes:
                    self._path(segment).unlink(missing_ok=True)
                for name in (_CURSOR, _CURSOR + ".tmp", _LOCK):
                    (self._dir / name).unlink(missing_ok=True)
            except OSError as exc:
                raise self._failure("remove failed", exc) from None
            finally:
                self._closed = True
                os.close(self._lock_fd)
        with contextlib.suppress(OSError):  # something else in it: left in place
            self._dir.rmdir()

    # -- internals ----------------------------------------------------------------------------

    def _failure(self, what: str, exc: OSError) -> SpoolError:
        """``SpoolError`` naming the directory, the step and the OS reason."""
        return SpoolError(f"audit spool {self._dir}: {what}: {exc.strerror or type(exc).__name__}")

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"audit spool {self._dir} is closed")

    def _path(self, segment: int) -> Path:
        return self._dir / f"{segment:020d}{_SUFFIX}"

    def _acquire_directory(self, create: bool) -> int:
        """The locked ``LOCK`` descriptor; refuses a directory that is not a spool."""
        try:
            if create:
                _make_private(self._dir)
                reason = unusable_reason(self._dir)
            elif not os.path.lexists(self._dir / _LOCK):
                reason = f"is not an audit spool (no {_LOCK} file)"
            else:
                reason = None
            if reason is not None:
                raise SpoolError(f"audit spool {self._dir} {reason}: refusing to use it")
            os.chmod(self._dir, 0o700)
            fd = _open_file(self._dir / _LOCK, os.O_RDWR | (os.O_CREAT if create else 0))
        except OSError as exc:
            raise self._failure("open failed", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolBusyError(f"audit spool {self._dir} is in use by another process") from None
        return fd

    def _list_segments(self) -> list[int]:
        found = []
        for entry in os.scandir(self._dir):
            stem, dot, suffix = entry.name.partition(".")
            if dot and "." + suffix == _SUFFIX and stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def _repair(self, segment: int) -> int:
        """Cut a torn last line off ``segment``; its size of whole lines."""
        with open(_open_file(self._path(segment), os.O_RDWR), "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return size
            keep = 0
            position = size
            while position > 0:
                step = min(_CHUNK, position)
                position -= step
                handle.seek(position)
                found = handle.read(step).rfind(b"\n")
                if found >= 0:
                    keep = position + found + 1
                    break
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
            return keep

    def _load_cursor(self) -> _Position:
        try:
            fd = _open_file(self._dir / _CURSOR, os.O_RDONLY)
        except FileNotFoundError:
            text = b""
        else:
            try:
                text = os.read(fd, _MAX_CURSOR)
            finally:
                os.close(fd)
        parts = text.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            cursor = _Position(int(parts[0]), int(parts[1]))
        else:
            cursor = _Position(min(self._sizes, default=1), 0)
        return self._normalise(cursor)

    def _normalise(self, position: _Position) -> _Position:
        """The canonical form of ``position``: inside an existing segment, or past the last.

        A position at (or, after outside truncation, beyond) the end of a
        segment moves to the start of the next one; a position in a missing
        segment moves to the next existing one.
        """
        for segment in sorted(self._sizes):
            if segment < position.segment:
                continue
            if segment > position.segment:
                return _Position(segment, 0)
            if position.offset < self._sizes[segment]:
                return position
            position = _Position(segment + 1, 0)
        return position

    def _drop_consumed(self) -> None:
        """Delete segments wholly before the cursor (and the empty segment it points past)."""
        doomed = [s for s in self._sizes if s < self._cursor.segment]
        for segment in doomed:
            self._path(segment).unlink(missing_ok=True)
            self._total -= self._sizes.pop(segment)
        if doomed:
            self._sync_directory()

    def _count_pending(self) -> int:
        count = 0
        for segment in sorted(self._sizes):
            if segment < self._cursor.segment:
                continue
            offset = self._cursor.offset if segment == self._cursor.segment else 0
            with open(_open_file(self._path(segment), os.O_RDONLY), "rb") as handle:
                handle.seek(offset)
                while chunk := handle.read(_CHUNK):
                    count += chunk.count(b"\n")
        return count

    def _active_segment(self) -> int:
        """The segment to append to (a new one when the last is full or consumed)."""
        last = max(self._sizes, default=0)
        if last and last >= self._cursor.segment and self._sizes[last] < self._segment_bytes:
            return last
        segment = max(last + 1, self._cursor.segment)
        fd = os.open(
            self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        os.close(fd)
        self._sync_directory()
        self._sizes[segment] = 0
        return segment

    def _write_durably(self, segment: int, data: bytes) -> None:
        size = self._sizes[segment]
        try:
            fd = _open_file(self._path(segment), os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise self._failure("append failed", exc) from None
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError:
                self._broken = True
            raise self._failure("append failed", exc) from None
        finally:
            os.close(fd)

    def _read(
        self,
        start: _Position,
        sizes: dict[int, int],
        max_lines: int,
        max_bytes: int | None = None,
    ) -> tuple[list[bytes], list[_Position]]:
        """Up to ``max_lines`` whole lines from ``start`` within ``sizes``, and their ends.

        With ``max_bytes``, stops before the line that would pass it (but takes one).
        """
        lines: list[bytes] = []
        ends: list[_Position] = []
        budget = max_bytes
        try:
            for segment in sorted(s for s in sizes if s >= start.segment):
                offset = start.offset if segment == start.segment else 0
                limit = sizes[segment]
                with open(_open_file(self._path(segment), os.O_RDONLY), "rb") as handle:
                    handle.seek(offset)
                    carry = b""
                    while offset < limit and len(lines) < max_lines:
                        data = handle.read(min(_CHUNK, limit - offset))
                        if not data:
                            raise SpoolError(f"audit spool {self._dir}: a segment was truncated")
                        base = offset - len(carry)
                        offset += len(data)
                        found, carry = self._split(carry + data, max_lines - len(lines))
                        for line in found:
                            if budget is not None:
                                if lines and len(line) > budget:
                                    return lines, ends
                                budget = max(0, budget - len(line))
                            base += len(line)
                            lines.append(line)
                            ends.append(_Position(segment, base))
                if len(lines) >= max_lines:
                    break
        except OSError as exc:
            raise self._failure("read failed", exc) from None
        return lines, ends

    @staticmethod
    def _split(chunk: bytes, room: int) -> tuple[list[bytes], bytes]:
        """Up to ``room`` whole lines of ``chunk`` (with their newlines).

        Returns them and the unfinished rest (empty once ``room`` lines are taken).
        """
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if len(lines) >= room:
            del lines[room:]
            rest = b""
        return [line + b"\n" for line in lines], rest

    def _store_cursor(self, position: _Position) -> None:
        temporary = self._dir / (_CURSOR + ".tmp")
        temporary.unlink(missing_ok=True)  # never written through: a new file each time
        fd = _open_file(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, f"{position.segment} {position.offset}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._dir / _CURSOR)
        self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def unusable_reason(directory: Path) -> str | None:
    """Why ``directory`` cannot be a spool's, or ``None`` (absent, empty or a spool).

    A directory holding anything but ``LOCK`` (a spool) or ``lost+found`` (a
    file system of its own) is someone else's: it is never taken over. Raises
    ``OSError`` when the directory cannot be listed.
    """
    try:
        names = set(os.listdir(directory))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return "is not a directory"
    if _LOCK in names or not names - _NOT_SPOOL_OK:
        return None
    return f"is not empty and not an audit spool (no {_LOCK} file)"


def _open_file(path: Path, flags: int) -> int:
    """A descriptor of the regular file ``path`` (created 0600 with ``O_CREAT``).

    Opened with ``O_NOFOLLOW | O_NONBLOCK``: a symlink is never followed and a
    FIFO never blocks; anything but a regular file raises ``SpoolError``
    naming it. Other failures raise their ``OSError``.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        fd = -1
    if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    if fd >= 0:
        os.close(fd)
    raise SpoolError(
        f"audit spool {path.parent}: {path.name} is not a regular file "
        "(a symlink, FIFO or directory is in its place): refusing to use it"
    )
