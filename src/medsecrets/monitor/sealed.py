"""Small files of monitor state, sealed with AES-256-GCM and replaced atomically.

The monitor keeps what it learned (the detectors' state, ``monitor.state``)
and what it raised (the recent alerts, ``monitor.history``) across restarts
in files that hold principals, addresses and paths: as sensitive as the audit
log, so unreadable and unforgeable without the barrier's keys.

- ``write_sealed(path, magic, body, key)``: ``magic``, a 12-byte random nonce
  and ``body`` sealed with AES-256-GCM (``magic`` as associated data), written
  to a new ``mkstemp`` file (0600, created exclusively), fsync'd, renamed over
  ``path``, the directory fsync'd. On failure the old file is untouched and
  the temporary one removed; one left by a writer that died is removed by the
  next write. One writer per file.
- ``read_sealed(path, magic, key, what=...)``: the body, or ``None`` for a
  missing file (silently) and, logged with ``what`` naming the file's role,
  for one that is not a regular file (a symlink, a FIFO: opened
  ``O_NOFOLLOW|O_NONBLOCK``), over ``MAX_BYTES``, unreadable, of another
  format, or that fails authentication (edited, or sealed with another key).

Keys come from the audit device's HMAC key (``derived_key``: HKDF, one label
per use), so nothing is read or written while the server is sealed.

``SealedKeeper`` is what keeps such a file for a live object: it restores the
object from the file once a key is known, and saves it at most once every
``every`` seconds (or when forced), never raising. Once restored, ``restore``
takes no lock, and a save holds the keeper's lock only to decide whether it
is due: the writing (snapshot, seal, write, fsync) is serialized by a lock
of its own, so a slow disk holds up other saves, never a reader.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.audit.record import Salter
from medsecrets.fdio import write_all

__all__ = ["MAX_BYTES", "SealedKeeper", "derived_key", "read_sealed", "write_sealed"]

_log = logging.getLogger("medsecrets.monitor")

MAX_BYTES: Final = 256 << 20
"""A sealed file larger than this is refused unread."""
_NONCE: Final = 12
_TAG: Final = 16


def derived_key(salter: Callable[[], Salter | None], label: str) -> Callable[[], bytes | None]:
    """The key for ``label`` from the device's current ``Salter`` (``None``: sealed)."""

    def key() -> bytes | None:
        current = salter()
        return current.derive(label) if current is not None else None

    return key


def write_sealed(path: Path, magic: bytes, body: bytes, key: bytes) -> None:
    """Seal ``body`` into ``path`` (see module docstring); raises ``OSError``."""
    nonce = os.urandom(_NONCE)
    data = magic + nonce + AESGCM(key).encrypt(nonce, body, magic)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # whatever the umask
    for stale in path.parent.glob(f".{path.name}.*"):  # left by a writer that died
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600, O_EXCL
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_sealed(path: Path, magic: bytes, key: bytes, *, what: str) -> bytes | None:
    """The body sealed in ``path`` (see module docstring), or ``None``."""
    data = _read(path, what)
    if data is None:
        return None
    if not data.startswith(magic) or len(data) < len(magic) + _NONCE + _TAG:
        _log.error("%s %s: not a file of this kind; starting afresh", what, path)
        return None
    nonce = data[len(magic) : len(magic) + _NONCE]
    try:
        return AESGCM(key).decrypt(nonce, data[len(magic) + _NONCE :], magic)
    except InvalidTag:
        _log.warning(
            "%s %s: cannot be authenticated (edited, or saved with another key); starting afresh",
            what,
            path,
        )
        return None


def _read(path: Path, what: str) -> bytes | None:
    """The bytes of the regular file at ``path`` (``None``, logged, for anything else:
    missing, a symlink, a FIFO, too large, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.error("%s %s: cannot open it (%s); starting afresh", what, path, exc)
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            _log.error("%s %s: not a regular file; starting afresh", what, path)
            return None
        chunks: list[bytes] = []
        size = info.st_size
        while size <= MAX_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size = sum(map(len, chunks))
        if size > MAX_BYTES:  # (also a file that grew while read)
            _log.error("%s %s: over %d bytes; starting afresh", what, path, MAX_BYTES)
            return None
        return b"".join(chunks)
    except OSError as exc:
        _log.error("%s %s: unreadable (%s); starting afresh", what, path, exc.strerror)
        return None
    finally:
        os.close(fd)


class SealedKeeper:
    """Keeps a live object in a sealed file at ``path`` (see module docstring).

    A subclass reads the file into the object (``_load(key)``) and writes the
    object to it (``_store(key)``: its snapshot, then ``write_sealed``);
    ``what`` names the file in the log. ``key()`` is the sealing key, ``None``
    while sealed. Thread-safe: ``_lock`` guards the restore and the save
    timing, ``_writing`` makes ``_store`` calls one at a time (``write_sealed``
    has one writer per file; a later save snapshots and writes after an
    earlier one), and no ``_store`` runs before the restore is done. No method
    raises: a failure is logged and the object goes on.
    """

    what = "monitor file"

    def __init__(
        self,
        path: Path,
        key: Callable[[], bytes | None],
        *,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._key = key
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._restored = False
        self._saved_at: float | None = None
        self.saves = 0
        """Files written so far."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={str(self.path)!r}, restored={self._restored})"

    @property
    def restored(self) -> bool:
        """Whether the restore is done (tried the first time a key was known)."""
        return self._restored

    def restore(self) -> None:
        """Load the file into the object, once: the first call with a key. Once done,
        returns at once without a lock (never waits for a save being written)."""
        if self._restored:
            return
        with self._lock:
            if self._restored:
                return
            try:
                key = self._key()
                if key is None:
                    return
                try:
                    self._load(key)
                finally:
                    self._restored = True  # tried: a failed load is not tried again
            except Exception as exc:
                _log.error("%s %s: not restored (%s)", self.what, self.path, type(exc).__name__)

    def save(self, *, force: bool = False) -> None:
        """Write the object, unless the last write was less than ``every`` seconds ago
        (``force``: now); only once restored, so never over a file not yet read. The
        keeper's lock is held only to decide; the writing holds ``_writing``."""
        self.restore()
        with self._lock:
            now = self._clock()
            if not force and self._saved_at is not None and now - self._saved_at < self._every:
                return
            self._saved_at = now
            try:
                key = self._key() if self._restored else None
            except Exception as exc:
                _log.error("%s %s: not saved (%s)", self.what, self.path, type(exc).__name__)
                return
        if key is None:
            return
        with self._writing:
            try:
                self._store(key)
            except Exception as exc:
                reason = exc.strerror if isinstance(exc, OSError) else None
                _log.error(
                    "%s %s: not saved (%s)", self.what, self.path, reason or type(exc).__name__
                )
                return
            self.saves += 1

    def _load(self, key: bytes) -> None:
        """Read the file (if any) into the object."""
        raise NotImplementedError

    def _store(self, key: bytes) -> None:
        """Write the object to the file; raises on failure."""
        raise NotImplementedError
