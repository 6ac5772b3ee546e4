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
- ``after()``, called after each batch, saves it (the first time, and then
  when ``every`` seconds have passed since the last save);
- ``close()`` saves it (a clean stop loses nothing; a crash loses at most
  ``every`` seconds of learning).

The file is sealed (``monitor.sealed``: AES-256-GCM under a key derived from
the audit device's HMAC key, 0600, replaced atomically): it holds principals,
addresses and paths, as the audit log does, and is unreadable without the
barrier's keys. An edited file (a principal's warm-up marked done with every
network learned, to hide it) fails authentication and is refused, as are a
file that is not a regular file, one too large, one of another kind and a
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

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import orjson

from medsecrets.audit.record import Salter
from medsecrets.collector import paused
from medsecrets.monitor.detectors import DetectorSet
from medsecrets.monitor.sealed import SealedKeeper, derived_key, read_sealed, write_sealed

__all__ = [
    "KEY_LABEL",
    "MAGIC",
    "StateKeeper",
    "load_state",
    "save_state",
    "state_key",
]

_log = logging.getLogger("medsecrets.monitor")

MAGIC: Final = b"medsecrets-detector-state/1\n"
KEY_LABEL: Final = "monitor-state"
"""The ``Salter.derive`` label of the key that seals the state."""


def state_key(salter: Callable[[], Salter | None]) -> Callable[[], bytes | None]:
    """The state's key from the device's current ``Salter`` (``None``: sealed)."""
    return derived_key(salter, KEY_LABEL)


def save_state(path: Path, detectors: DetectorSet, key: bytes) -> None:
    """Write ``detectors``' state to ``path``, sealed with ``key`` (see module docstring).

    Raises ``OSError`` (the old file is then untouched) or, for a state JSON
    cannot hold, ``TypeError``.
    """
    with paused():
        body = orjson.dumps(detectors.state())
    write_sealed(path, MAGIC, body, key)


def load_state(path: Path, detectors: DetectorSet, key: bytes) -> bool:
    """Restore ``detectors`` from ``path`` if it holds a state sealed with ``key``.

    False (the detectors unchanged, the reason logged) for a missing, unusable,
    unauthentic or malformed file. True when restored, even if some detectors
    start afresh because their thresholds changed (logged).
    """
    body = read_sealed(path, MAGIC, key, what="monitor state")
    if body is None:
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


class StateKeeper(SealedKeeper):
    """Restores and saves one ``DetectorSet``'s state at ``path`` (see module docstring):
    ``before()`` restores (once), ``after()`` saves when due, ``close()`` saves.
    Never raises."""

    what = "monitor state"

    def __init__(
        self,
        detectors: DetectorSet,
        path: Path,
        key: Callable[[], bytes | None],
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(path, key, every=every, clock=clock)
        self.detectors = detectors

    def before(self) -> None:
        """Restore the saved state, once (a no-op without a key or after the first time)."""
        self.restore()

    def after(self) -> None:
        """Save the state if ``every`` seconds have passed since the last save."""
        self.save()

    def close(self) -> None:
        """Save the state now."""
        self.save(force=True)

    def _load(self, key: bytes) -> None:
        if load_state(self.path, self.detectors, key):
            _log.info("monitor state restored from %s", self.path)

    def _store(self, key: bytes) -> None:
        save_state(self.path, self.detectors, key)
