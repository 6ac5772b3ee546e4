"""Driving PostgreSQL lock contention in tests: a call run in a thread, and a wait until
some backend waits for a lock."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg


def in_thread(run: Callable[[], None]) -> tuple[threading.Thread, list[BaseException | None]]:
    """``run`` started in a thread; the list gets what it raised (``None``: it returned)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def wait_until_blocked(dsn: str, thread: threading.Thread, *, backends: int = 1) -> None:
    """Return once ``backends`` backends wait for a lock (or ``thread`` has finished)."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while thread.is_alive():
            row = watcher.execute(
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"
            ).fetchone()
            if row is not None and row[0] >= backends:
                return
