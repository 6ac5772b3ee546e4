"""``StateKeeper``: the detectors' state kept across restarts in one signed file.

The detectors learn their baselines over days (a principal's warm-up lasts
7 days by default) and hold windows and quiet periods; a restart that forgot
them would leave ``unusual_time``, ``new_source`` and ``first_category`` blind
for a week, empty every window an attack was filling, and raise again the
alerts of the last hour. So the process that runs the detectors (the audit
process, or the server's monitor thread) keeps their state
(``DetectorSet.state``) in a file:

- ``before()``, called before each batch is observed, restores the saved state
  once: at the first batch seen with a key, before that batch changes anything;
- ``after()``, called after each batch, saves it when ``every`` seconds have
  passed since the last save;
- ``close()`` saves it (a clean stop loses nothing; a crash loses at most
  ``every`` seconds of learning).

The file (mode 0600, replaced atomically: a temporary file, fsync, rename,
fsync of the directory) is one line ``{"format":1,"mac":"<hex>"}`` followed by
the state as JSON; ``mac`` is HMAC-SHA256 of those JSON bytes under a key
derived from the audit device's HMAC key (``Salter.derive``). An edited state
(a principal's warm-up marked done with every network learned, to hide it) is
refused, as are a file of another format, an unreadable or malformed one and
a state saved under other thresholds: each is logged (the signature and
thresholds cases as warnings) and the detectors start afresh, as with no file;
the next save replaces it. Without a key (the server is sealed) nothing is
read or written. The file holds principals, addresses, paths and times (no
secret value, no token), as the audit log does.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import orjson

from medsecrets.audit.record import Salter
from medsecrets.monitor.detectors import DetectorSet, StateMismatch

__all__ = ["FORMAT", "KEY_LABEL", "StateKeeper", "load_state", "save_state", "state_key"]

_log = logging.getLogger("medsecrets.monitor")

FORMAT: Final = 1
KEY_LABEL: Final = "monitor-state"
"""The ``Salter.derive`` label of the key that signs the state."""


def state_key(salter: Callable[[], Salter | None]) -> Callable[[], bytes | None]:
    """The state's signing key from the device's current ``Salter`` (``None``: sealed)."""

    def key() -> bytes | None:
        current = salter()
        return current.derive(KEY_LABEL) if current is not None else None

    return key


def save_state(path: Path, detectors: DetectorSet, key: bytes) -> None:
    """Write ``detectors``' state to ``path``, signed with ``key`` (see module docstring);
    raises ``OSError`` (the old file is then untouched)."""
    body = orjson.dumps(detectors.state())
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()
    data = orjson.dumps({"format": FORMAT, "mac": mac}) + b"\n" + body
    temporary = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_state(path: Path, detectors: DetectorSet, key: bytes) -> bool:
    """Restore ``detectors`` from ``path`` if it holds a state signed with ``key``.

    False (the detectors unchanged, the reason logged) for a missing,
    unreadable, malformed, unsigned or wrongly signed file, or one saved
    under other thresholds.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError as exc:
        _log.error("monitor state %s: unreadable (%s); detectors start afresh", path, exc.strerror)
        return False
    head, newline, body = data.partition(b"\n")
    try:
        header = orjson.loads(head)
        valid = (
            newline
            and isinstance(header, dict)
            and header.get("format") == FORMAT
            and isinstance(header.get("mac"), str)
        )
    except orjson.JSONDecodeError:
        valid = False
    if not valid:
        _log.error("monitor state %s: not a state file; detectors start afresh", path)
        return False
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, header["mac"]):
        _log.warning(
            "monitor state %s: bad signature (edited, or saved with another key);"
            " detectors start afresh",
            path,
        )
        return False
    try:
        detectors.restore(orjson.loads(body))
    except StateMismatch:
        _log.warning("monitor state %s: saved under other thresholds; detectors start afresh", path)
        return False
    except (orjson.JSONDecodeError, ValueError):
        _log.error("monitor state %s: malformed; detectors start afresh", path)
        return False
    return True


class StateKeeper:
    """Restores and saves one ``DetectorSet``'s state at ``path`` (see module docstring).

    ``key()`` is the signing key, or ``None`` while sealed. Not thread-safe:
    the thread that observes calls every method.
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
        key = self._key()
        if key is None:
            return
        self._restored = True
        if load_state(self.path, self.detectors, key):
            _log.info("monitor state restored from %s", self.path)

    def after(self) -> None:
        """Save the state if ``every`` seconds have passed since the last save."""
        if self._clock() - self._saved_at >= self._every:
            self.save()

    def close(self) -> None:
        """Save the state (if the restore was tried: a state never restored is not
        written over the saved one)."""
        self.save()

    def save(self) -> None:
        """Write the state now (never raises: a failure is logged and retried later)."""
        self._saved_at = self._clock()
        key = self._key() if self._restored else None
        if key is None:
            return
        try:
            save_state(self.path, self.detectors, key)
        except OSError as exc:
            _log.error("monitor state %s: not saved (%s)", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                self.path.with_name(f".{self.path.name}.tmp").unlink()
            return
        self.saves += 1
