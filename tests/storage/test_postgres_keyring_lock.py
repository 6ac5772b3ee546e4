"""PostgreSQL, several nodes: the keyring check of encrypting writes takes a shared lock.

Every encrypting write batch expects ``core/keyring`` unchanged. Two writes that only
*check* the keyring must not wait for each other (they used to: the expected row was
read ``FOR UPDATE``, so every write on every node queued on that one row), while a
batch that *changes* the keyring must still wait for a check in flight (and a check
for a change in flight), so no record is sealed under a keyring that changed under it.

Each test holds one transaction open at the point after its check, on a connection
or a node the test controls, and runs the other batch on a store whose sessions have
a short ``lock_timeout``: a lock timeout (SQLSTATE 55P03) is the sign that it would
have waited; no timing is measured.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from medsecrets.barrier.aes_gcm import KEYRING_KEY, AesGcmBarrier
from medsecrets.errors import ConflictError, StorageError
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Expect, Operation, Put
from medsecrets.storage.postgres import PostgresStorage, _batch_statements
from tests.support.pglocks import in_thread, wait_until_blocked

pytestmark = pytest.mark.postgres

ROOT_KEY = Sensitive(bytes(range(32)))
#: A lock the other batch waits for longer than this fails it with SQLSTATE 55P03.
LOCK_TIMEOUT_MS = 200


def _sorts_after_keyring(key: str) -> str:
    """``key``, checked to come after ``core/keyring`` in a batch's row order (key-hash
    order), so a batch writing it holds its keyring check while it waits for the row."""
    digest = hashlib.sha256
    assert digest(key.encode()).digest() > digest(KEYRING_KEY.encode()).digest()
    return key


HELD = _sorts_after_keyring("held")
OTHER = _sorts_after_keyring("other")


def _impatient(dsn: str) -> PostgresStorage:
    """A store (another node) whose batches give up on a lock after ``LOCK_TIMEOUT_MS``."""
    return PostgresStorage(make_conninfo(dsn, options=f"-c lock_timeout={LOCK_TIMEOUT_MS}"))


def _assert_lock_timeout(run: Callable[[], object]) -> None:
    with pytest.raises(StorageError, match="55P03"):
        run()


@contextmanager
def _held(dsn: str, ops: Sequence[Operation], *, statements: int | None = None) -> Iterator[None]:
    """The transaction of batch ``ops`` run up to its commit (or its first ``statements``
    statements) and held open there; committed at the end of the block."""
    with psycopg.connect(dsn) as conn:
        for query, params in _batch_statements(ops)[:statements]:
            conn.execute(query, params)
        yield
        conn.commit()


# -- the storage contract ---------------------------------------------------------------


def test_two_read_checks_of_a_key_do_not_block_each_other(pg_dsn: str) -> None:
    store = PostgresStorage(pg_dsn)
    other = _impatient(pg_dsn)
    try:
        store.put(KEYRING_KEY, b"ring-1")
        with _held(pg_dsn, [Expect(KEYRING_KEY, b"ring-1", shared=True), Put("a", b"1")]):
            other.batch([Expect(KEYRING_KEY, b"ring-1", shared=True), Put("b", b"2")])
        assert (store.get("a"), store.get("b")) == (b"1", b"2")
    finally:
        store.close()
        other.close()


def test_a_change_of_the_key_waits_for_a_read_check_in_flight(pg_dsn: str) -> None:
    store = PostgresStorage(pg_dsn)
    other = _impatient(pg_dsn)
    change = [Expect(KEYRING_KEY, b"ring-1"), Put(KEYRING_KEY, b"ring-2")]
    try:
        store.put(KEYRING_KEY, b"ring-1")
        with _held(pg_dsn, [Expect(KEYRING_KEY, b"ring-1", shared=True), Put("a", b"1")]):
            _assert_lock_timeout(lambda: other.batch(change))
            _assert_lock_timeout(lambda: other.put(KEYRING_KEY, b"ring-2"))
            _assert_lock_timeout(lambda: other.delete(KEYRING_KEY))
        other.batch(change)
        assert store.get(KEYRING_KEY) == b"ring-2"
    finally:
        store.close()
        other.close()


def test_a_read_check_waits_for_a_change_in_flight_then_fails(pg_dsn: str) -> None:
    store = PostgresStorage(pg_dsn)
    other = _impatient(pg_dsn)
    check = [Expect(KEYRING_KEY, b"ring-1", shared=True), Put("a", b"1")]
    try:
        store.put(KEYRING_KEY, b"ring-1")
        with _held(pg_dsn, [Expect(KEYRING_KEY, b"ring-1"), Put(KEYRING_KEY, b"ring-2")]):
            _assert_lock_timeout(lambda: other.batch(check))
        with pytest.raises(ConflictError):
            other.batch(check)
        assert store.get("a") is None
    finally:
        store.close()
        other.close()


def test_a_read_check_of_a_key_the_batch_writes_locks_it_for_the_write(pg_dsn: str) -> None:
    """A shared check of a key its own batch writes is taken as a precondition (``FOR
    UPDATE``): a shared lock would have to be upgraded, and two such batches would
    deadlock. Held right after the check, before the write."""
    store = PostgresStorage(pg_dsn)
    other = _impatient(pg_dsn)
    try:
        store.put("k", b"1")
        with _held(pg_dsn, [Expect("k", b"1", shared=True), Put("k", b"2")], statements=1):
            _assert_lock_timeout(lambda: other.batch([Expect("k", b"1", shared=True)]))
        other.batch([Expect("k", b"1", shared=True), Put("k", b"3")])
        with pytest.raises(ConflictError):
            other.batch([Expect("k", b"1", shared=True), Put("k", b"4")])
        assert store.get("k") == b"3"
    finally:
        store.close()
        other.close()


# -- the barrier's writes on two nodes -----------------------------------------------------


@contextmanager
def _write_held_after_its_keyring_check(
    dsn: str, node: AesGcmBarrier
) -> Iterator[list[BaseException | None]]:
    """``node`` writes ``HELD`` while a rival holds that row: its batch has taken its
    keyring check (the keyring sorts first) and waits. Released at the end of the block,
    then the write finishes; yields its outcome (filled in once it has)."""
    node.put(HELD, b"before")
    with psycopg.connect(dsn) as rival:
        rival.execute("SELECT 1 FROM medsecrets_kv WHERE key = %s FOR UPDATE", (HELD,))
        thread, outcome = in_thread(lambda: node.put(HELD, b"after"))
        try:
            wait_until_blocked(dsn, thread)
            assert thread.is_alive(), outcome
            yield outcome
        finally:
            rival.commit()
            thread.join()


def test_encrypting_writes_of_two_nodes_do_not_queue_on_the_keyring(pg_dsn: str) -> None:
    first_store, second_store = PostgresStorage(pg_dsn), _impatient(pg_dsn)
    try:
        first, second = AesGcmBarrier(first_store), AesGcmBarrier(second_store)
        first.initialize(ROOT_KEY)
        second.unseal(ROOT_KEY)
        with _write_held_after_its_keyring_check(pg_dsn, first) as outcome:
            second.put(OTHER, b"meanwhile")
        assert outcome == [None]
        assert (first.get(HELD), first.get(OTHER)) == (b"after", b"meanwhile")
    finally:
        first_store.close()
        second_store.close()


def test_a_rotation_on_another_node_waits_for_an_encrypting_write(pg_dsn: str) -> None:
    first_store, second_store = PostgresStorage(pg_dsn), _impatient(pg_dsn)
    try:
        first, second = AesGcmBarrier(first_store), AesGcmBarrier(second_store)
        first.initialize(ROOT_KEY)
        second.unseal(ROOT_KEY)
        with _write_held_after_its_keyring_check(pg_dsn, first) as outcome:
            _assert_lock_timeout(second.rotate)
        assert outcome == [None]
        assert second.rotate() == 2
        assert first.get(HELD) == b"after"
    finally:
        first_store.close()
        second_store.close()


def test_a_role_that_may_not_create_the_check_function_opens_and_checks_for_a_write(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A DBA made the tables with code older than ``medsecrets_check`` and granted a role
    their rows only: after an upgrade that role's open was refused (it may not create the
    function). It opens, with a warning, and its read checks lock the row for a write
    (``medsecrets_expect``): the same outcome, waiting for a shared lock in flight."""
    PostgresStorage(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("DROP FUNCTION medsecrets_check(bytea, bytea)")  # as older code left it
        admin.execute("DROP ROLE IF EXISTS medsecrets_checker")
        admin.execute("CREATE ROLE medsecrets_checker LOGIN")
        admin.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON medsecrets_kv, medsecrets_leases"
            " TO medsecrets_checker"
        )
    with caplog.at_level(logging.WARNING, logger="medsecrets.storage.postgres"):
        app = _impatient(f"{pg_dsn} user=medsecrets_checker")
    try:
        [record] = caplog.records
        assert "may not create the function medsecrets_check" in record.getMessage()
        app.put(KEYRING_KEY, b"ring-1")
        app.batch([Expect(KEYRING_KEY, b"ring-1", shared=True), Put("a", b"1")])
        with pytest.raises(ConflictError):
            app.batch([Expect(KEYRING_KEY, b"ring-0", shared=True), Put("a", b"2")])
        with psycopg.connect(pg_dsn) as reader:
            reader.execute("SELECT 1 FROM medsecrets_kv WHERE key = %s FOR SHARE", (KEYRING_KEY,))
            _assert_lock_timeout(
                lambda: app.batch([Expect(KEYRING_KEY, b"ring-1", shared=True), Put("b", b"1")])
            )
        assert (app.get("a"), app.get("b")) == (b"1", None)
    finally:
        app.close()
