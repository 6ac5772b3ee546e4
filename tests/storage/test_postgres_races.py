"""PostgresStorage under contention: a batch fails with ``ConflictError`` only when one of
its own ``Expect`` conditions does not hold, never because PostgreSQL aborted it to break a
deadlock or a serialization cycle (those are rolled back whole, so the batch is run again)."""

from __future__ import annotations

import hashlib
import threading

import psycopg
import pytest

from medsecrets.errors import ConflictError, StorageError, StorageUnavailable
from medsecrets.storage.base import Expect, Put
from medsecrets.storage.postgres import PostgresStorage
from tests.support.pglocks import in_thread, wait_until_blocked

pytestmark = pytest.mark.postgres


def test_a_batch_chosen_as_deadlock_victim_is_run_again(pg_dsn: str) -> None:
    """A rival holds one key and then asks for another that the batch holds: PostgreSQL
    ends the deadlock by aborting the batch (its detector fires first), which had no
    condition to fail: it is run again and succeeds once the rival is done."""
    low, high = sorted(["a", "b"], key=lambda k: hashlib.sha256(k.encode()).digest())
    store = PostgresStorage(pg_dsn)
    try:
        store.batch([Put(low, b"0"), Put(high, b"0")])
        with psycopg.connect(pg_dsn) as rival:
            rival.execute("SET deadlock_timeout = '60s'")  # the batch's detector fires first
            rival.execute("UPDATE medsecrets_kv SET value = 'r' WHERE key = %s", (high,))
            # in key-hash order, as a batch takes its rows: "low" taken, waits for "high"
            thread, outcome = in_thread(lambda: store.batch([Put(low, b"1"), Put(high, b"1")]))
            wait_until_blocked(pg_dsn, thread)
            rival.execute("UPDATE medsecrets_kv SET value = 'r' WHERE key = %s", (low,))
            rival.commit()
            thread.join()
        assert outcome == [None]
        assert (store.get(low), store.get(high)) == (b"1", b"1")
    finally:
        store.close()


def test_a_serialization_failure_on_a_key_not_expected_is_run_again(pg_dsn: str) -> None:
    """A batch that expects a key absent runs SERIALIZABLE; when it also writes another
    key that a rival updates meanwhile, PostgreSQL aborts it ("could not serialize
    access due to concurrent update"): no condition of the batch failed, so it is run
    again and succeeds."""
    store = PostgresStorage(pg_dsn)
    try:
        store.put("y", b"0")
        with psycopg.connect(pg_dsn) as rival:
            rival.execute("UPDATE medsecrets_kv SET value = 'r' WHERE key = 'y'")
            thread, outcome = in_thread(
                lambda: store.batch([Expect("new", None), Put("new", b"1"), Put("y", b"1")])
            )
            wait_until_blocked(pg_dsn, thread)
            rival.commit()
            thread.join()
        assert outcome == [None]
        assert (store.get("new"), store.get("y")) == (b"1", b"1")
    finally:
        store.close()


def test_batches_expecting_distinct_absent_keys_do_not_fail_each_other(pg_dsn: str) -> None:
    """Creating distinct keys at once (each batch expects its own key absent): PostgreSQL's
    serializable checks lock index pages, not keys, and aborted about a quarter of such
    batches; none has a failed condition, so every one must succeed."""
    store = PostgresStorage(pg_dsn, max_size=6)
    failures: list[BaseException] = []

    def create(worker: int) -> None:
        for n in range(40):
            key = f"w{worker}/{n}"
            try:
                store.batch([Expect(key, None), Put(key, b"v"), Put(f"i/{key}", b"x")])
            except BaseException as exc:
                failures.append(exc)

    try:
        threads = [threading.Thread(target=create, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(store.list("w", limit=1000).keys) == 240
    finally:
        store.close()


def test_check_and_set_racers_on_one_key_exactly_one_wins(pg_dsn: str) -> None:
    """Four threads check-and-set one key from the same value: exactly one wins, the others
    get ``ConflictError`` (a failed condition is not run again)."""
    store = PostgresStorage(pg_dsn, max_size=4)
    try:
        store.put("cas", b"0")
        results: list[bool] = []
        lock = threading.Lock()

        def contend() -> None:
            try:
                mine = threading.current_thread().name.encode()
                store.batch([Expect("cas", b"0"), Put("cas", mine)])
            except ConflictError:
                won = False
            else:
                won = True
            with lock:
                results.append(won)

        threads = [threading.Thread(target=contend, name=f"t{n}") for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False, False, False, True]
    finally:
        store.close()


def test_a_role_granted_only_the_tables_a_dba_made_can_use_them(pg_dsn: str) -> None:
    """A DBA creates the tables (the owner's first open) and grants a role the rows only: the
    role opens the store and uses it (it used to fail at open, on CREATE … IF NOT EXISTS and
    CREATE OR REPLACE FUNCTION, which need rights on the schema and the function)."""
    PostgresStorage(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS medsecrets_app")
        admin.execute("CREATE ROLE medsecrets_app LOGIN")
        admin.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON medsecrets_kv, medsecrets_leases"
            " TO medsecrets_app"
        )
    app = PostgresStorage(f"{pg_dsn} user=medsecrets_app")
    try:
        app.batch([Expect("k", None), Put("k", b"1")])
        app.batch([Expect("k", b"1"), Put("k", b"2")])
        with pytest.raises(ConflictError):
            app.batch([Expect("k", b"1"), Put("k", b"3")])
        assert app.get("k") == b"2"
        lease = app.acquire_lease("leader", "me", 30)
        assert lease is not None
        app.release_lease(lease)
    finally:
        app.close()


def test_a_role_without_rights_gets_a_clear_error_at_open(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS medsecrets_nobody")
        admin.execute("CREATE ROLE medsecrets_nobody LOGIN")
    with pytest.raises(StorageError, match="permission denied for schema public") as info:
        PostgresStorage(f"{pg_dsn} user=medsecrets_nobody")
    assert "may not create or use the medsecrets tables" in str(info.value)
    assert info.value.__cause__ is None


def test_a_write_whose_connection_is_lost_says_its_outcome_is_unknown(pg_dsn: str) -> None:
    """A write under way when the server ends its connection may or may not have committed:
    the error says so (it said 'postgres batch failed (OperationalError)'), and the
    write is not run again."""
    store = PostgresStorage(pg_dsn)
    try:
        store.put("k", b"0")
        with psycopg.connect(pg_dsn) as rival:
            rival.execute("UPDATE medsecrets_kv SET value = 'r' WHERE key = 'k'")
            thread, outcome = in_thread(lambda: store.batch([Put("k", b"1"), Put("j", b"1")]))
            wait_until_blocked(pg_dsn, thread)
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE NOT granted"
                    " AND pid <> pg_backend_pid()"
                )
            thread.join()
            rival.rollback()
        assert len(outcome) == 1
        assert isinstance(outcome[0], StorageUnavailable)  # 503: read before retrying
        assert "outcome is unknown" in str(outcome[0])
        assert store.get("j") is None  # (here it did not commit)
    finally:
        store.close()


def test_no_pooled_connection_in_time_says_nothing_was_sent(pg_dsn: str) -> None:
    store = PostgresStorage(pg_dsn, max_size=1, timeout=0.5)
    try:
        taken = store._pool.connection()  # the only connection
        with taken, pytest.raises(StorageUnavailable, match="nothing was sent"):
            store.put("k", b"v")
        assert store.get("k") is None
    finally:
        store.close()
