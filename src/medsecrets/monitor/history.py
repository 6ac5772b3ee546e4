"""``AlertHistory``: the dispatcher's recent alerts kept across restarts.

``alerts list`` (``GET /v1/sys/alerts``) shows the dispatcher's ring of recent
alerts; a restart used to empty it, in the middle of an incident too. The
server keeps the ring in ``<data_dir>/monitor/alerts.state``, sealed
(``monitor.sealed``: AES-256-GCM under a key derived from the audit device's
HMAC key, ``KEY_LABEL``), as ``recent()`` returns it (alerts, counts,
deliveries as last seen):

- ``restore()`` (idempotent) reads it once a key is known and hands it to
  ``AlertDispatcher.restore``: the earlier alerts follow this run's;
- ``save()`` writes the ring, at most once every ``every`` seconds (an alert
  storm must not slow the thread that records alerts in the audit trail):
  the server calls it after each alert is recorded there, and
  ``save(force=True)`` when it stops. A crash loses at most the alerts of the
  last ``every`` seconds from the list (never from the audit trail).

A missing, unusable or unauthentic file is logged (``monitor.sealed``) and
the list starts empty. Every alert is also an audit record of kind ``alert``,
the complete history. Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import orjson

from medsecrets.monitor.dispatcher import AlertDispatcher
from medsecrets.monitor.sealed import read_sealed, write_sealed

__all__ = ["KEY_LABEL", "MAGIC", "AlertHistory"]

_log = logging.getLogger("medsecrets.monitor")

MAGIC: Final = b"medsecrets-alert-history/1\n"
KEY_LABEL: Final = "alert-history"
"""The ``Salter.derive`` label of the key that seals the history."""


class AlertHistory:
    """Keeps ``dispatcher``'s recent alerts at ``path`` (see module docstring)."""

    def __init__(
        self,
        dispatcher: AlertDispatcher,
        path: Path,
        key: Callable[[], bytes | None],
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.path = path
        self._key = key
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._restored = False
        self._saved_at: float | None = None

    def __repr__(self) -> str:
        return f"AlertHistory(path={str(self.path)!r}, restored={self._restored})"

    def restore(self) -> None:
        """Hand the saved alerts to the dispatcher, once (a no-op while sealed); never
        raises."""
        with self._lock:
            if self._restored:
                return
            try:
                key = self._key()
                if key is None:
                    return
                self._restored = True
                body = read_sealed(self.path, MAGIC, key, what="alert history")
                if body is None:
                    return
                history = orjson.loads(body)
                if not isinstance(history, list):
                    raise ValueError("not a list")
                self.dispatcher.restore(history)
            except Exception as exc:
                _log.error("alert history %s: not restored (%s)", self.path, type(exc).__name__)

    def save(self, *, force: bool = False) -> None:
        """Write the dispatcher's recent alerts, unless the last write was less than
        ``every`` seconds ago (``force``: now); after ``restore``, so never over a history
        not yet read. Never raises."""
        self.restore()
        with self._lock:
            now = self._clock()
            if not force and self._saved_at is not None and now - self._saved_at < self._every:
                return
            try:
                key = self._key() if self._restored else None
                if key is None:
                    return
                self._saved_at = now
                body = orjson.dumps(self.dispatcher.recent(self.dispatcher.ring_size))
                write_sealed(self.path, MAGIC, body, key)
            except Exception as exc:
                reason = exc.strerror if isinstance(exc, OSError) else None
                _log.error(
                    "alert history %s: not saved (%s)", self.path, reason or type(exc).__name__
                )
