"""``FileAuditDevice``: audit records as JSON lines in a private, rotated file.

Contract:

- **Private.** The file is created with mode 0600 (its directory 0700 when
  missing). A file that is group/other accessible, a symlink or not a regular
  file is refused with ``ConfigError`` naming the path.
- **Durable.** ``write`` appends all its lines with one ``os.write`` (looping
  on partial writes), then ``os.fdatasync`` (``os.fsync`` where there is
  none: the data and the file's size, not its times; 56 against 61 µs of CPU
  and 126 against 133 µs per 900-byte append here); it returns only when both succeeded
  and raises the ``OSError`` as is otherwise (the broker counts any exception
  as a failure).
- **Never torn.** After a failed write that may have left part of a batch in
  the file, the next write first truncates the file back to its size after
  the last successful fsync. ``open`` truncates a torn last line (no trailing
  ``\\n``: a crash mid-write) away.
- **Where the path points.** Before each write the device checks that its
  path still names the file it holds; if the file was moved, removed or
  replaced, it reopens the path (with the same checks), so records never go
  to an unlinked file and a directory or symlink put in its place makes every
  write fail until it is removed.
- **Rotation.** When a write would take the file past ``max_bytes`` (0: no
  limit) or ``rotate_interval`` seconds (0: never) have passed since the file
  was opened, the file is renamed to ``<stem>-<UTC yyyymmddThhmmssZ>-<seq of
  its first record>.jsonl`` in the same directory (a ``-<n>`` suffix keeps the
  name unique), the directory is fsync'd and a fresh file is opened. Records
  are never changed: the chain continues across files. ``rotated_files()``
  lists the rotated files in chain order; beyond ``keep`` (0: all) the
  oldest are deleted. A file is rotated only when it holds a record, and a
  write's lines always land in one file.
- **Resumable.** ``open`` returns the ``ChainHead`` of the last record of
  the current file, or of the newest rotated file if the current one is
  empty; a last line that is not a record raises ``ConfigError`` naming the
  file.
- **One writer.** ``open`` takes an exclusive lock on ``<path>.lock`` (0600)
  and holds it until ``close``: a second process opening the same file (a
  second server on the data directory, an earlier audit process still
  draining) gets ``AuditFileBusy`` (a ``ConfigError``), since two writers
  appending to one chain fork it for good.
- **Encryption at rest.** With ``cipher``, each line is stored sealed
  (``RecordCipher.seal``); sealed lines keep ``prev``/``seq``/``hash`` in
  place, so ``open`` and verification without the key read them the same way.
  With ``cipher_source`` instead (a store still sealed at start: the key is a
  secret in it), the source is asked before each write until it gives the
  cipher, kept from then on: ``None`` (not yet: the store is sealed) writes the
  lines plain (written while sealed, they hold no HMAC and no value); raising
  fails the write (``AuditFailure`` saying why: fail closed, no audit, no
  secret).

``_write`` and ``_fsync`` are seams for tests (to inject ``ENOSPC``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.device import ChainHead
from medsecrets.audit.record import LineError, split_line
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import AuditFailure, ConfigError, MedsecretsError

__all__ = ["DEFAULT_MAX_BYTES", "ROTATED_NAME", "AuditFileBusy", "FileAuditDevice"]

DEFAULT_MAX_BYTES: Final = 100 * 1024 * 1024
"""Default size at which the file is rotated (100 MiB)."""

_CHUNK = 64 * 1024
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_ROTATED_SUFFIX = ".jsonl"
ROTATED_NAME: Final = r"(\d{8}T\d{6}Z)-(\d+)(?:-(\d+))?" + re.escape(_ROTATED_SUFFIX)
"""What follows ``<stem>-`` in a rotated file's name: its stamp, first seq, unique suffix."""
_LOCK_SUFFIX = ".lock"


class AuditFileBusy(ConfigError):
    """Another process writes the audit file (its lock is held)."""


def _lock(path: Path) -> int:
    """An exclusive lock on the file at ``path`` (created 0600), held by the returned
    descriptor; ``AuditFileBusy`` when another process holds it. The file named by the
    path after locking is the one locked (a lock file removed meanwhile is made anew)."""
    for _ in range(8):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditFileBusy(
                f"audit file {path.with_suffix('')} is written by another process "
                "(another server on this data directory?)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        held = os.fstat(fd)
        try:
            named = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            named = None
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # removed by the holder that just closed: lock the new one
    raise AuditFileBusy(f"audit file {path.with_suffix('')}: its lock keeps changing")


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file, then release it (whoever opens it meanwhile sees it removed
    once it holds the lock, and locks a new one)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)


_log = logging.getLogger(__name__)


_DATASYNC: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(fd: int, size: int) -> tuple[bytes | None, int]:
    """The last complete line of the file (with ``\\n``) and the size up to its end.

    ``(None, 0)`` when the file holds no complete line. Bytes after the last
    ``\\n`` (a torn line) are not part of the result.
    """
    end = size
    tail = b""
    start = -1
    while end > 0:  # find the last newline
        read_from = max(0, end - _CHUNK)
        tail = os.pread(fd, end - read_from, read_from) + tail
        end = read_from
        start = tail.rfind(b"\n")
        if start >= 0:
            break
    if start < 0:
        return None, 0
    good = end + start + 1
    tail = tail[: start + 1]
    while True:  # find the newline before it (or the start of the file)
        before = tail.rfind(b"\n", 0, len(tail) - 1)
        if before >= 0:
            return tail[before + 1 :], good
        if end == 0:
            return tail, good
        read_from = max(0, end - _CHUNK)
        tail = os.pread(fd, end - read_from, read_from) + tail
        end = read_from


def _first_line(fd: int) -> bytes:
    """The file's first line (up to and including ``\\n``, or all of it)."""
    head = b""
    while True:
        chunk = os.pread(fd, _CHUNK, len(head))
        head += chunk
        newline = head.find(b"\n")
        if newline >= 0:
            return head[: newline + 1]
        if not chunk:
            return head


def _head_of(line: bytes, path: Path) -> ChainHead:
    try:
        _prev, seq, digest = split_line(line)
    except LineError:
        raise ConfigError(f"audit file {path}: its last line is not an audit record") from None
    return ChainHead(seq=seq, hash=digest)


class FileAuditDevice:
    """An ``AuditDevice`` writing JSON lines to ``path`` (see module docstring)."""

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        rotate_interval: float = 0.0,
        keep: int = 0,
        cipher: RecordCipher | None = None,
        cipher_source: Callable[[], RecordCipher | None] | None = None,
        clock: Clock | None = None,
        _write: Callable[[int, memoryview], int] = os.write,
        _fsync: Callable[[int], None] = _DATASYNC,
    ) -> None:
        if max_bytes < 0:
            raise ConfigError(f"audit device {name!r}: max_bytes must be >= 0")
        if rotate_interval < 0:
            raise ConfigError(f"audit device {name!r}: rotate_interval must be >= 0")
        if keep < 0:
            raise ConfigError(f"audit device {name!r}: keep must be >= 0")
        self._name = name
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._rotate_interval = rotate_interval
        self._keep = keep
        self._cipher = cipher
        self._cipher_source = cipher_source if cipher is None else None
        self._clock: Clock = clock or SystemClock()
        self._os_write = _write
        self._os_fsync = _fsync
        self._open = False
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._identity = (0, 0)
        self._size = 0  # the file's size after the last successful fsync
        self._dirty = False  # a failed write may have left bytes after _size
        self._opened_at = 0.0
        self._rotated = re.compile(re.escape(self._path.stem) + "-" + ROTATED_NAME)

    def __repr__(self) -> str:
        return f"FileAuditDevice(name={self._name!r}, path={str(self._path)!r})"

    @property
    def name(self) -> str:
        """The device's configured name."""
        return self._name

    @property
    def path(self) -> Path:
        """The current (not rotated) file."""
        return self._path

    @property
    def cipher(self) -> RecordCipher | None:
        """The at-rest cipher, if the device encrypts (readers need it to decode); a
        deferred one once its source gives it (``None`` before, or if it cannot)."""
        if self._cipher is None and self._cipher_source is not None:
            with contextlib.suppress(Exception):
                self._take_cipher()
        return self._cipher

    def _take_cipher(self) -> RecordCipher | None:
        """The deferred cipher if its source gives it now (kept); raises what it raises."""
        source = self._cipher_source
        found = source() if source is not None else None
        if found is not None:
            self._cipher, self._cipher_source = found, None
        return found

    @property
    def keeps_everything(self) -> bool:
        """Whether no rotated file is ever deleted (``keep`` 0): the chain starts at seq 1."""
        return self._keep == 0

    def files(self) -> list[Path]:
        """Every file of the chain, oldest first: the rotated ones, then the current."""
        return [*self.rotated_files(), self._path]

    def open(self) -> ChainHead:
        """Open (creating if needed) the file; the head of the chain it holds.

        ``AuditFileBusy`` when another process holds the file (see module docstring).
        """
        self.close()
        directory = self._path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)  # whatever the umask
        self._lock_fd = _lock(self._path.with_name(self._path.name + _LOCK_SUFFIX))
        last = self._reopen()
        self._open = True
        if last is not None:
            return _head_of(last, self._path)
        rotated = self.rotated_files()
        if not rotated:
            return ChainHead()
        newest = rotated[-1]
        fd = os.open(newest, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            line, _ = _last_line(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if line is None:
            raise ConfigError(f"audit file {newest}: holds no complete audit record")
        return _head_of(line, newest)

    def write(self, lines: Sequence[bytes]) -> None:
        """Durably append ``lines`` (see module docstring); raises on any failure."""
        if not self._open:
            raise AuditFailure(f"audit device {self._name!r} is not open")
        if not lines:
            return
        cipher = self._cipher
        if cipher is None and self._cipher_source is not None:
            try:
                cipher = self._take_cipher()
            except Exception as exc:  # the key cannot be had: nothing is written in clear
                reason = exc.message if isinstance(exc, MedsecretsError) else type(exc).__name__
                raise AuditFailure(
                    f"audit device {self._name!r}: its encryption key cannot be read ({reason})"
                ) from None
        data = b"".join(cipher.seal(line) for line in lines) if cipher else b"".join(lines)
        fd = self._current()
        if self._dirty:
            os.ftruncate(fd, self._size)
            self._dirty = False
        if self._size > 0 and self._due(len(data)):
            fd = self._rotate(fd)
        self._dirty = True
        view = memoryview(data)
        while view:
            written = self._os_write(fd, view)
            if written <= 0:
                raise OSError(errno.EIO, "audit file write made no progress", str(self._path))
            view = view[written:]
        self._os_fsync(fd)
        self._size += len(data)
        self._dirty = False

    def close(self) -> None:
        """Close the file (idempotent); every accepted record is already durable."""
        self._open = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._lock_fd is not None:
            lock, self._lock_fd = self._lock_fd, None
            _unlock(self._path.with_name(self._path.name + _LOCK_SUFFIX), lock)

    def rotated_files(self) -> list[Path]:
        """The rotated files of this device, in chain order (first record's seq)."""
        found: list[tuple[int, str, int, Path]] = []
        try:
            entries = list(self._path.parent.iterdir())
        except FileNotFoundError:
            return []
        for entry in entries:
            match = self._rotated.fullmatch(entry.name)
            if match is not None:
                stamp, seq, unique = match.groups()
                found.append((int(seq), stamp, int(unique or 0), entry))
        return [entry for *_, entry in sorted(found)]

    # -- internals ---------------------------------------------------------

    def _reopen(self) -> bytes | None:
        """Open the path afresh (checks, torn-tail repair); its last complete line."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        try:
            fd = os.open(self._path, _OPEN_FLAGS, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"audit file {self._path} is a symlink: refused") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"audit file {self._path} is not a regular file")
            if info.st_mode & 0o077:
                mode = oct(stat.S_IMODE(info.st_mode))
                raise ConfigError(
                    f"audit file {self._path} is accessible by group or others"
                    f" (mode {mode}); it must be 0600"
                )
            last, good = _last_line(fd, info.st_size)
            if good != info.st_size:
                _log.warning("audit file %s: truncating a torn last line", self._path)
                os.ftruncate(fd, good)
                self._os_fsync(fd)
            _fsync_dir(self._path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)
        self._size = good
        self._dirty = False
        self._opened_at = self._clock.monotonic()
        return last

    def _current(self) -> int:
        """The descriptor of the file the path names now (reopened if it changed)."""
        try:
            info = os.stat(self._path, follow_symlinks=False)
            same = (info.st_dev, info.st_ino) == self._identity
        except FileNotFoundError:
            same = False
        if not same or self._fd is None:
            if self._fd is not None:
                _log.warning("audit file %s was moved or replaced: reopening it", self._path)
            self._reopen()
        assert self._fd is not None
        return self._fd

    def _due(self, incoming: int) -> bool:
        if self._max_bytes and self._size + incoming > self._max_bytes:
            return True
        elapsed = self._clock.monotonic() - self._opened_at
        return bool(self._rotate_interval) and elapsed >= self._rotate_interval

    def _rotate(self, fd: int) -> int:
        """Rename the current file away, open a fresh one, prune; the new descriptor."""
        try:
            _prev, seq, _hash = split_line(_first_line(fd))
        except LineError:
            raise ConfigError(f"audit file {self._path}: its first line is not a record") from None
        stamp = self._clock.now().astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{self._path.stem}-{stamp}-{seq:012d}"  # name order is chain order
        target = self._path.with_name(base + _ROTATED_SUFFIX)
        unique = 0
        while target.exists():
            unique += 1
            target = self._path.with_name(f"{base}-{unique}{_ROTATED_SUFFIX}")
        os.rename(self._path, target)
        self._reopen()  # fsyncs the directory: the rename and the new file
        self._prune()
        assert self._fd is not None
        return self._fd

    def _prune(self) -> None:
        if not self._keep:
            return
        rotated = self.rotated_files()
        if len(rotated) <= self._keep:
            return
        for old in rotated[: -self._keep]:
            old.unlink(missing_ok=True)
        _fsync_dir(self._path.parent)
