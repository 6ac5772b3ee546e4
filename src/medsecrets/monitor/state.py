"""``StateKeeper``: the detectors' state kept across restarts in one encrypted file.

The detectors learn their baselines over days (a principal's warm-up lasts
7 days by default) and hold windows and quiet periods; a restart that forgot
them would leave ``unusual_time``, ``new_source`` and ``first_category`` blind
for a week, empty every window an attack was filling, and raise again the
alerts of the last hour. So the process that runs the detectors (the audit
process, or the server's monitor thread) keeps their state
(``DetectorSet.state``) in a file:

- ``before()``, called before each batch is observed, restores the saved state
  once: at the first batch seen with a key, before that batch changes anything
  (what the detectors saw before it, while sealed, is replaced);
- ``after()``, called after each batch, saves it when ``every`` seconds have
  passed since the last save;
- ``close()`` saves it (a clean stop loses nothing; a crash loses at most
  ``every`` seconds of learning).

The file (mode 0600, written to a new temporary file, fsync'd, renamed over
the old one, the directory fsync'd) is ``MAGIC``, a 12-byte nonce and the
state as JSON sealed with AES-256-GCM (``MAGIC`` as associated data) under a
key derived from the audit device's HMAC key (``Salter.derive``): it holds
principals, addresses and paths, as the audit log does, and is unreadable
without the barrier's keys, as an encrypted audit log is. An edited file (a
principal's warm-up marked done with every network learned, to hide it)
fails authentication and is refused, as are a file that is not a regular
file (a symlink, a FIFO), one over ``MAX_BYTES``, one of another format and a
malformed state: each is logged and the detectors start afresh, as with no
file; the next save replaces it. A detector whose thresholds changed since
the save starts afresh alone (logged), the others are restored. Without a
key (sealed) nothing is read or written.

Cost: a state's tables are capped (``detectors.STATE_KEYS`` keys each), and
the collector is paused while it is built or read. A typical state (hundreds
of principals) is kilobytes; the largest a save of ``STATE_KEYS`` keys a table
takes is measured in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.audit.record import Salter
from medsecrets.collector import paused
from medsecrets.monitor.detectors import DetectorSet

__all__ = [
    "KEY_LABEL",
    "MAGIC",
    "MAX_BYTES",
    "StateKeeper",
    "load_state",
    "save_state",
    "state_key",
]

_log = logging.getLogger("medsecrets.monitor")

MAGIC: Final = b"medsecrets-detector-state/1\n"
KEY_LABEL: Final = "monitor-state"
"""The ``Salter.derive`` label of the key that seals the state."""
MAX_BYTES: Final = 256 << 20
"""A state file larger than this is refused unread."""
_NONCE: Final = 12


def state_key(salter: Callable[[], Salter | None]) -> Callable[[], bytes | None]:
    """The state's key from the device's current ``Salter`` (``None``: sealed)."""

    def key() -> bytes | None:
        current = salter()
        return current.derive(KEY_LABEL) if current is not None else None

    return key


def save_state(path: Path, detectors: DetectorSet, key: bytes) -> None:
    """Write ``detectors``' state to ``path``, sealed with ``key`` (see module docstring).

    Raises ``OSError`` (the old file is then untouched, the temporary one gone)
    or, for a state JSON cannot hold, ``TypeError``.
    """
    with paused():
        body = orjson.dumps(detectors.state())
    nonce = os.urandom(_NONCE)
    data = MAGIC + nonce + AESGCM(key).encrypt(nonce, body, MAGIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600, O_EXCL
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
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


def _read(path: Path) -> bytes | None:
    """The bytes of the regular file at ``path`` (``None``, logged, for anything else:
    missing, a symlink, a FIFO, too large, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.error("monitor state %s: cannot open it (%s); detectors start afresh", path, exc)
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            _log.error("monitor state %s: not a regular file; detectors start afresh", path)
            return None
        chunks: list[bytes] = []
        size = info.st_size
        while size <= MAX_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size = sum(map(len, chunks))
        if size > MAX_BYTES:  # (also a file that grew while read)
            _log.error("monitor state %s: over %d bytes; detectors start afresh", path, MAX_BYTES)
            return None
        return b"".join(chunks)
    except OSError as exc:
        _log.error("monitor state %s: unreadable (%s); detectors start afresh", path, exc.strerror)
        return None
    finally:
        os.close(fd)


def load_state(path: Path, detectors: DetectorSet, key: bytes) -> bool:
    """Restore ``detectors`` from ``path`` if it holds a state sealed with ``key``.

    False (the detectors unchanged, the reason logged) for a missing, unusable,
    unauthentic or malformed file. True when restored, even if some detectors
    start afresh because their thresholds changed (logged).
    """
    data = _read(path)
    if data is None:
        return False
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _NONCE + 16:
        _log.error("monitor state %s: not a detector state file; detectors start afresh", path)
        return False
    nonce = data[len(MAGIC) : len(MAGIC) + _NONCE]
    try:
        body = AESGCM(key).decrypt(nonce, data[len(MAGIC) + _NONCE :], MAGIC)
    except InvalidTag:
        _log.warning(
            "monitor state %s: cannot be authenticated (edited, or saved with another key);"
            " detectors start afresh",
            path,
        )
        return False
    try:
        with paused():
            afresh = detectors.restore(orjson.loads(body))
    except (orjson.JSONDecodeError, ValueError):
        _log.error("monitor state %s: malformed; detectors start afresh", path)
        return False
    if afresh:
        _log.warning(
            "monitor state %s: thresholds changed since it was saved; %s start afresh",
            path,
            ", ".join(afresh),
        )
    return True


class StateKeeper:
    """Restores and saves one ``DetectorSet``'s state at ``path`` (see module docstring).

    ``key()`` is the sealing key, or ``None`` while sealed. Not thread-safe:
    the thread that observes calls every method. No method raises: a failure
    is logged, and the detectors go on.
    """

    def __init__(
        self,
        detectors: DetectorSet,
        path: Path,
        key: Callable[[], bytes | None],
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.detectors = detectors
        self.path = path
        self._key = key
        self._every = every
        self._clock = clock
        self._restored = False
        self._saved_at = clock()
        self.saves = 0
        """States written so far."""

    def __repr__(self) -> str:
        return f"StateKeeper(path={str(self.path)!r}, restored={self._restored})"

    @property
    def restored(self) -> bool:
        """Whether the restore was tried (at the first batch seen with a key)."""
        return self._restored

    def before(self) -> None:
        """Restore the saved state, once (a no-op without a key or after the first time)."""
        if self._restored:
            return
        try:
            key = self._key()
            if key is None:
                return
            self._restored = True
            if load_state(self.path, self.detectors, key):
                _log.info("monitor state restored from %s", self.path)
        except Exception as exc:  # the detectors go on, afresh
            _log.error("monitor state %s: restore failed (%s)", self.path, type(exc).__name__)

    def after(self) -> None:
        """Save the state if ``every`` seconds have passed since the last save."""
        if self._clock() - self._saved_at >= self._every:
            self.save()

    def close(self) -> None:
        """Save the state (if the restore was tried: a state never restored is not
        written over the saved one)."""
        self.save()

    def save(self) -> None:
        """Write the state now (a failure is logged; the next save tries again)."""
        self._saved_at = self._clock()
        try:
            key = self._key() if self._restored else None
            if key is None:
                return
            save_state(self.path, self.detectors, key)
        except Exception as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            )
            _log.error("monitor state %s: not saved (%s)", self.path, reason)
            return
        self.saves += 1
