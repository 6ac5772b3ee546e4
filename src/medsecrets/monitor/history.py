"""``AlertHistory``: the dispatcher's recent alerts kept across restarts.

``alerts list`` (``GET /v1/sys/alerts``) shows the dispatcher's ring of recent
alerts; a restart used to empty it, in the middle of an incident too. The
server keeps the ring in ``<data_dir>/monitor/alerts.state``, sealed
(``monitor.sealed``: AES-256-GCM under a key derived from the audit device's
HMAC key, ``KEY_LABEL``), as ``recent()`` returns it (alerts, counts,
deliveries as last seen):

- ``restore()`` (idempotent) reads it once a key is known and hands it to
  ``AlertDispatcher.restore``: the earlier alerts follow this run's, whose
  ids go on after theirs;
- ``changed()``, called after each alert is recorded in the audit trail, asks
  a saver thread (``start``) for a save and returns at once: the thread
  saves at most once every ``every`` seconds, counted from the end of the
  last save, however many alerts come meanwhile (an alert storm, or a slow
  disk, never holds up the thread that records alerts in the audit trail),
  and saves again while deliveries are still pending, so the list shows
  how they ended;
- ``stop()`` ends the thread with a last save.

A crash loses at most the alerts of the last ``every`` seconds from the list
(never from the audit trail); a delivery it cut short shows as
``interrupted``.

A missing, unusable or unauthentic file is logged (``monitor.sealed``) and
the list starts empty. Every alert is also an audit record of kind ``alert``,
the complete history. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import orjson

from medsecrets.monitor.dispatcher import AlertDispatcher
from medsecrets.monitor.sealed import SealedKeeper, read_sealed, write_sealed

__all__ = ["KEY_LABEL", "MAGIC", "AlertHistory"]


MAGIC: Final = b"medsecrets-alert-history/1\n"
KEY_LABEL: Final = "alert-history"
"""The ``Salter.derive`` label of the key that seals the history."""


class AlertHistory(SealedKeeper):
    """Keeps ``dispatcher``'s recent alerts at ``path`` (see module docstring)."""

    what = "alert history"

    def __init__(
        self,
        dispatcher: AlertDispatcher,
        path: Path,
        key: Callable[[], bytes | None],
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(path, key, every=every, clock=clock)
        self.dispatcher = dispatcher
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the saver thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="medsecrets-alert-history", daemon=True
            )
            self._thread.start()

    def changed(self) -> None:
        """The alerts changed: a save is due (see module docstring); never blocks."""
        self._wanted.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the saver thread, then save once more."""
        self._stopping.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.save(force=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wanted.wait()
            if self._stopping.is_set():
                return
            self._wanted.clear()
            # Asked before the snapshot: a delivery that ends while the save is written
            # is pending in it, so it must be saved again (asking after would miss it).
            pending = self.dispatcher.stats()["pending"]
            self.save(force=True)
            if pending or self.dispatcher.stats()["pending"]:
                self._wanted.set()  # deliveries running: save how they end
            self._stopping.wait(self._every)  # at most one save per period

    def _load(self, key: bytes) -> None:
        body = read_sealed(self.path, MAGIC, key, what=self.what)
        if body is None:
            return
        history = orjson.loads(body)
        if not isinstance(history, list):
            raise TypeError("an alert history is a list")
        self.dispatcher.restore(history)

    def _store(self, key: bytes) -> None:
        recent = self.dispatcher.recent(self.dispatcher.ring_size)
        write_sealed(self.path, MAGIC, orjson.dumps(recent), key)
