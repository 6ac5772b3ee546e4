"""``Sweeper``: a background thread that purges what has expired.

Every ``interval`` seconds it calls ``store.secrets.purge_expired()`` (soft-deleted
secrets past their recovery window) and, given a ``TokenStore``, its
``purge_expired()`` (the records of expired tokens). A sealed
or uninitialised store is skipped quietly; any other error is logged (type
and stack only) and the next round tries again; a failure of one purge does
not skip the other. ``stop()`` wakes the thread
and waits for it; a round in progress finishes first.
"""

from __future__ import annotations

import logging
import threading

from medsecrets.auth.tokens import TokenStore
from medsecrets.errors import NotInitializedError, SealedError
from medsecrets.store import SecretStore

__all__ = ["Sweeper"]

log = logging.getLogger("medsecrets.server.sweeper")


class Sweeper:
    """Periodic ``purge_expired`` on its own daemon thread."""

    def __init__(
        self, store: SecretStore, *, interval: float, tokens: TokenStore | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._store = store
        self._tokens = tokens
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="medsecrets-sweeper", daemon=True)

    def __repr__(self) -> str:
        return f"Sweeper(interval={self._interval}, running={self._thread.is_alive()})"

    def start(self) -> None:
        """Start the thread (the first round runs after one interval)."""
        self._thread.start()

    def sweep_once(self) -> tuple[str, ...]:
        """One round now; returns the purged secret paths (empty while sealed)."""
        try:
            purged = tuple(self._store.secrets.purge_expired())
        except (SealedError, NotInitializedError):
            return ()
        except Exception:  # the tokens' purge below still runs; the next round tries again
            log.exception("purging expired secrets failed")
            purged = ()
        if purged:
            log.info("purged expired secrets", extra={"count": len(purged), "paths": purged})
        if self._tokens is not None:
            try:
                tokens = self._tokens.purge_expired()
            except (SealedError, NotInitializedError):
                return purged
            except Exception:  # the secrets' purge above stands; the next round tries again
                log.exception("purging expired tokens failed")
                return purged
            if tokens:
                log.info("purged expired tokens", extra={"count": tokens})
        return purged

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sweep_once()
            except Exception:
                log.exception("sweeper round failed")

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
