"""Injectable time. Nothing in medsecrets reads the wall clock directly.

``Clock`` is the seam; ``SystemClock`` is the production default and
``ManualClock`` lets tests move time instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "utc"]

utc = dt.UTC


class Clock(Protocol):
    """Source of the current time."""

    def now(self) -> dt.datetime:
        """Timezone-aware UTC now."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(utc)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (for tests and simulations)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=utc)
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float = 0.0, *, days: float = 0.0) -> None:
        """Move time forward."""
        delta = seconds + days * 86400.0
        if delta < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += dt.timedelta(seconds=delta)
            self._mono += delta
