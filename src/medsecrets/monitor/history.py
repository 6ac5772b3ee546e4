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

    def _load(self, key: bytes) -> None:
        body = read_sealed(self.path, MAGIC, key, what=self.what)
        if body is None:
            return
        history = orjson.loads(body)
        if not isinstance(history, list):
            raise TypeError("an alert history is a list")
        self.dispatcher.restore(history)

    def _store(self, key: bytes) -> None:
        write_sealed(
            self.path, MAGIC, orjson.dumps(self.dispatcher.recent(self.dispatcher.ring_size)), key
        )
