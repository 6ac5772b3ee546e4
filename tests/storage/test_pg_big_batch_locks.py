"""A PostgreSQL batch expecting more keys than it takes advisory locks for (``_key_locks``,
``_MAX_KEY_LOCKS``) still queues fairly for the keys it changes.

Such a batch (a keyring change inside a large rewrap batch, any large conditional write)
used to take no advisory lock at all, so a stream of read checks of a key it changes, which
PostgreSQL's row locks let join one another, kept it out until the storage timeout (a 503),
the defect the advisory locks were taken to fix. It now keeps its exclusive locks (the keys
it changes) and drops only its shared ones, unless even those are too many: then it takes
none, so it cannot fill the server's lock table ("out of shared memory").

Locks are seen in ``pg_locks`` from another connection while the batch waits for a row
a rival holds (advisory locks are taken before any row).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from medsecrets.barrier.aes_gcm import KEYRING_KEY
from medsecrets.storage.base import Expect, Operation, Put
from medsecrets.storage.postgres import (
    _KEY_LOCK_CLASS,
    _MAX_KEY_LOCKS,
    PostgresStorage,
    _batch_statements,
    _digest,
)
from medsecrets.testing.pgcluster import PostgresCluster
from tests.support.pglocks import advisory_locks, in_thread, waiting_for_row

pytestmark = pytest.mark.postgres

#: Keys a large batch expects a value of: more than it may take advisory locks for.
KEYS = 40
#: Threads running read checks of the keyring one after the other.
READERS = 8
#: Seconds each read check holds its locks before its commit (``_read_checks``).
HOLD = 0.05
#: Read checks each reader has run before the large batch starts (the stream is going).
WARM_UP = 5
#: The large batch's storage timeout (``storage.timeout``): a batch kept out of a row this
#: long fails with ``StorageUnavailable``. Short, so that the test is quick; it passes when
#: the batch commits at all.
STORAGE_TIMEOUT = 2.0
#: A store's timeout while a test holds its batch on purpose (never reached).
PATIENT = 60.0


def _lock_number(key: str) -> int:
    """The second half of ``key``'s advisory lock: its SHA-256's first four bytes, signed."""
    return int.from_bytes(_digest(key)[:4], "big", signed=True)


def _rewrap(keys: list[str], changed: list[str]) -> list[Operation]:
    """A large batch: read checks of ``keys`` (each holding ``b"v"``), and a change of each
    of ``changed`` (from ``b"v"`` to ``b"w"``)."""
    return [
        *(Expect(key, b"v", shared=True) for key in keys),
        *(Expect(key, b"v") for key in changed),
        *(Put(key, b"w") for key in changed),
    ]


def _checked_keys(count: int) -> list[str]:
    keys = [f"versions/{n}" for n in range(count)]
    assert len({_lock_number(key) for key in [*keys, KEYRING_KEY]}) == count + 1
    return keys


def test_a_batch_expecting_more_keys_than_the_bound_keeps_the_lock_of_the_key_it_changes(
    pg_dsn: str,
) -> None:
    """A rewrap of ``KEYS - 1`` records that changes the keyring holds the keyring's lock,
    exclusive, and no lock of the records it only checks."""
    assert KEYS > _MAX_KEY_LOCKS
    checked = _checked_keys(KEYS - 1)
    store = PostgresStorage(pg_dsn, timeout=PATIENT)
    try:
        store.batch([Put(key, b"v") for key in [*checked, KEYRING_KEY]])
        batch = _rewrap(checked, [KEYRING_KEY])
        with waiting_for_row(pg_dsn, KEYRING_KEY, lambda: store.batch(batch)) as outcome:
            locks = advisory_locks(pg_dsn, _KEY_LOCK_CLASS)
        assert locks == [(_lock_number(KEYRING_KEY), "ExclusiveLock", True)]
        assert outcome == [None]
        assert store.get(KEYRING_KEY) == b"w"
    finally:
        store.close()


def _read_checks(dsn: str, number: int, stop: threading.Event, warm: threading.Event) -> None:
    """Read checks of the keyring (``b"v"``), one after the other on a connection of their
    own, until one finds it changed (or ``stop``); ``warm`` is set after ``WARM_UP``. Reader
    ``number`` starts ``number / READERS`` of a check later than the first, so that the
    readers' checks do not all end at once.

    Each is the transaction of an encrypting write's batch (``_batch_statements``, run by
    the store's ``_run_batch``) that holds its locks ``HOLD`` seconds before it commits, as a
    commit flushed to a slow disk would: this test's cluster commits so fast that checks
    the store runs back to back seldom overlap, and a change of the row gets in between."""
    check: list[Operation] = [Expect(KEYRING_KEY, b"v", shared=True), Put(f"reader/{number}", b"x")]
    statements = [*_batch_statements(check), ("SELECT pg_sleep(%s)", (HOLD,))]
    with psycopg.connect(dsn, autocommit=True) as conn:
        time.sleep(HOLD * number / READERS)
        done = 0
        while not stop.is_set():
            try:
                PostgresStorage._run_batch(conn, statements)
            except psycopg.errors.SerializationFailure:
                conn.execute("ROLLBACK")
                return  # the keyring changed: the change is in
            done += 1
            if done == WARM_UP:
                warm.set()


def test_a_large_batch_changing_the_keyring_gets_in_under_a_stream_of_read_checks(
    pg_dsn: str,
) -> None:
    """``READERS`` threads check the keyring one batch after another, so its row is always
    share-locked by some of them. A batch that rewraps ``KEYS - 1`` records and changes the
    keyring waits for the checks in flight only, not for every later one, and commits
    within its storage timeout (it used to wait for ever, so for that timeout: a 503)."""
    checked = _checked_keys(KEYS - 1)
    setup = PostgresStorage(pg_dsn)
    writer = PostgresStorage(pg_dsn, timeout=STORAGE_TIMEOUT)
    stop = threading.Event()
    warm = [threading.Event() for _ in range(READERS)]
    try:
        setup.batch([Put(key, b"v") for key in [*checked, KEYRING_KEY]])
        readers = [
            in_thread(functools.partial(_read_checks, pg_dsn, n, stop, warm[n]))
            for n in range(READERS)
        ]
        try:
            for event, (_, outcome) in zip(warm, readers, strict=True):
                assert event.wait(PATIENT), outcome
            writer.batch(_rewrap(checked, [KEYRING_KEY]))
        finally:
            stop.set()
            for thread, _ in readers:
                thread.join()
        assert [outcome for _, outcome in readers] == [[None]] * READERS
        assert setup.get(KEYRING_KEY) == b"w"
        assert {setup.get(key) for key in checked} == {b"v"}
    finally:
        setup.close()
        writer.close()


# -- a batch changing more expected keys than the bound takes none --------------------------

#: Keys of a batch far beyond what the small server's lock table holds.
MANY = 1000
#: The expected keys that batch changes: more than ``_MAX_KEY_LOCKS``.
CHANGED = 40


@pytest.fixture(scope="module")
def small_lock_table(pg_cluster: PostgresCluster) -> Iterator[str]:
    """The DSN of a database on a cluster of its own whose lock table holds a few hundred
    locks (``max_locks_per_transaction`` 10, ``max_connections`` 10). Asks for the session's
    ``pg_cluster`` for its rule on missing PostgreSQL binaries (skip, or fail under CI)."""
    settings = {"max_locks_per_transaction": "10", "max_connections": "10"}
    with PostgresCluster(settings=settings) as cluster:
        yield cluster.create_database("small_lock_table")


def test_a_batch_changing_more_expected_keys_than_the_bound_takes_no_lock(
    small_lock_table: str,
) -> None:
    """A batch changing ``CHANGED`` of ``MANY`` expected keys takes no advisory lock, and
    commits on a server whose lock table would not hold one for each key."""
    dsn = small_lock_table
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.OutOfMemory):
        conn.execute(  # the premise: a lock for each key would not fit
            "SELECT pg_advisory_xact_lock(%s, n) FROM generate_series(1, %s) n",
            (_KEY_LOCK_CLASS, MANY),
        )
    assert CHANGED > _MAX_KEY_LOCKS
    keys = [f"versions/{n}" for n in range(MANY)]
    checked, changed = keys[CHANGED:], keys[:CHANGED]
    store = PostgresStorage(dsn, timeout=PATIENT)
    try:
        store.batch([Put(key, b"v") for key in keys])
        batch = _rewrap(checked, changed)
        with waiting_for_row(dsn, changed[0], lambda: store.batch(batch)) as outcome:
            locks = advisory_locks(dsn, _KEY_LOCK_CLASS)
        assert locks == []
        assert outcome == [None]
        assert [store.get(key) for key in keys] == [b"w"] * CHANGED + [b"v"] * (MANY - CHANGED)
    finally:
        store.close()
