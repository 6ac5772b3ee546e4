"""Driving PostgreSQL lock contention in tests: a call run in a thread, a wait until
some backend waits for a lock, a call held waiting for a row, and the advisory locks
the server holds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


@contextmanager
def waiting_for_row(
    dsn: str, key: str, run: Callable[[], None]
) -> Iterator[list[BaseException | None]]:
    """``run`` (a storage call that locks the ``medsecrets_kv`` row of ``key``) started in a
    thread while a rival transaction holds that row ``FOR UPDATE``; the block runs once
    it waits for a lock (for the row, unless something else held it up first). At the
    end of the block the row is released and the call finishes; yields its outcome
    (``in_thread``'s, filled in once it has)."""
    with psycopg.connect(dsn) as rival:
        rival.execute("SELECT 1 FROM medsecrets_kv WHERE key = %s FOR UPDATE", (key,))
        thread, outcome = in_thread(run)
        try:
            wait_until_blocked(dsn, thread)
            assert thread.is_alive(), outcome
            yield outcome
        finally:
            rival.commit()
            thread.join()


def advisory_locks(dsn: str, classid: int) -> list[tuple[int, str, bool]]:
    """The two-``int4`` advisory locks of class ``classid`` in the whole server, held or
    waited for, as seen from a new connection: ``(second key as a signed int4, mode,
    granted)`` each (mode ``"ShareLock"`` or ``"ExclusiveLock"``), sorted."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        rows = watcher.execute(
            "SELECT objid::bigint, mode, granted FROM pg_locks"
            " WHERE locktype = 'advisory' AND objsubid = 2 AND classid = %s::bigint::oid",
            (classid,),
        ).fetchall()
    return sorted(
        (n - 2**32 if n >= 2**31 else n, str(mode), bool(granted)) for n, mode, granted in rows
    )
