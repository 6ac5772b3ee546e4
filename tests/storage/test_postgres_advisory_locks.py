"""The advisory locks of a PostgreSQL batch (``_key_locks``) never fill the server's lock
table: a batch expecting the values of many keys (a secret's versions rewrapped in one
batch, with a high ``max_versions``) commits as it did before batches took them.

Heavyweight locks, advisory ones included, take slots of one table the whole server shares
(about ``max_locks_per_transaction`` times ``max_connections``); row locks take none. So a
batch takes its per-key advisory locks only when it expects a few keys' values: above
``_MAX_KEY_LOCKS`` it takes none (its row locks still decide what it sees).
"""

from __future__ import annotations

import psycopg

from medsecrets.storage.base import Expect, Put
from medsecrets.storage.postgres import _MAX_KEY_LOCKS, PostgresStorage, _batch_statements


def _lock_slots(dsn: str) -> int:
    """The nominal size of the server's lock table (it takes spare shared memory too)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('max_locks_per_transaction')::int"
            " * (current_setting('max_connections')::int"
            " + current_setting('max_prepared_transactions')::int)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _advisory(ops: list[Expect | Put]) -> int:
    return sum("pg_advisory" in query for query, _ in _batch_statements(ops))


def test_a_batch_expecting_more_keys_than_the_lock_table_holds_commits(pg_dsn: str) -> None:
    keys = [f"versions/{n}" for n in range(3 * _lock_slots(pg_dsn))]
    store = PostgresStorage(pg_dsn, timeout=120)  # a large batch on a shared test machine
    try:
        store.batch([Put(key, b"v1") for key in keys])
        store.batch([*(Expect(key, b"v1") for key in keys), Put("rewrapped", b"yes")])
        assert store.get("rewrapped") == b"yes"
    finally:
        store.close()


def test_a_batch_takes_its_key_locks_only_up_to_the_bound() -> None:
    few = [Expect(f"k/{n}", b"1", shared=True) for n in range(_MAX_KEY_LOCKS)]
    assert _advisory([*few, Put("x", b"1")]) == _MAX_KEY_LOCKS
    assert _advisory([*few, Expect("one more", b"1", shared=True), Put("x", b"1")]) == 0
    # over the bound, the lock of a key the batch changes is kept (it must queue fairly)
    assert _advisory([*few, Expect("one more", b"1"), Put("x", b"1")]) == 1
