"""PostgreSQL, several nodes: the keyring check of encrypting writes takes a shared lock.

Every encrypting write batch expects ``core/keyring`` unchanged. Two writes that only
*check* the keyring must not wait for each other (they used to: the expected row was
read ``FOR UPDATE``, so every write on every node queued on that one row), while a
batch that *changes* the keyring must still wait for a check in flight (and a check
for a change in flight), so no record is sealed under a keyring that changed under it.
A check that comes while a change waits waits behind it, so checks that keep overlapping
cannot keep a rotation out (PostgreSQL's row locks let them join the share lock held).

Each test holds one transaction open at the point after its check, on a connection
or a node the test controls, and runs the other batch on a store whose sessions have
a short ``lock_timeout``: a lock timeout (SQLSTATE 55P03) is the sign that it would
have waited; no timing is measured.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from medsecrets.barrier.aes_gcm import KEYRING_KEY, AesGcmBarrier
from medsecrets.errors import ConflictError, StorageError
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Expect, Operation, Put
from medsecrets.storage.postgres import PostgresStorage, _batch_statements
from tests.support.pglocks import in_thread, wait_until_blocked, waiting_for_row

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
    with waiting_for_row(dsn, HELD, lambda: node.put(HELD, b"after")) as outcome:
        yield outcome


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


# -- a rotation is not starved by read checks that keep overlapping --------------------------

#: Read checks that come, one after the other, while a rotation waits.
RELAYS = 3


def _try_check(conn: psycopg.Connection[tuple[object, ...]], key: str) -> str:
    """A read check of the keyring (``ring-1``) writing ``key``, run on ``conn`` (a session
    with a short ``lock_timeout``) up to its commit: ``"in"`` (granted, held open), or,
    rolled back, ``"queued"`` (lock timeout) or ``"changed"`` (it found another keyring)."""
    ops = [Expect(KEYRING_KEY, b"ring-1", shared=True), Put(key, b"1")]
    try:
        for query, params in _batch_statements(ops):
            conn.execute(query, params)
    except psycopg.errors.LockNotAvailable:
        conn.rollback()
        return "queued"
    except psycopg.errors.SerializationFailure:
        conn.rollback()
        return "changed"
    return "in"


def test_a_rotation_gets_in_once_the_read_checks_in_flight_finish(pg_dsn: str) -> None:
    """Read checks of several connections overlap, so the keyring row is always share-locked.
    PostgreSQL granted a new check's ``FOR SHARE`` at once while a rotation waited for the
    ones in flight, so the rotation waited for every later one too (under writes that never
    pause, until the storage timeout: a 503). A check that comes while a rotation waits now
    waits behind it, and once the checks that were in flight end the rotation is in."""
    store = PostgresStorage(pg_dsn)
    impatient = make_conninfo(pg_dsn, options=f"-c lock_timeout={LOCK_TIMEOUT_MS}")
    rotation = [Expect(KEYRING_KEY, b"ring-1"), Put(KEYRING_KEY, b"ring-2")]
    try:
        store.put(KEYRING_KEY, b"ring-1")
        with ExitStack() as stack:
            conns = [stack.enter_context(psycopg.connect(impatient)) for _ in range(RELAYS + 1)]
            assert _try_check(conns[0], "c0") == "in"
            thread, outcome = in_thread(lambda: store.batch(rotation))
            outcomes: list[str] = []
            try:
                wait_until_blocked(pg_dsn, thread)
                for number, (before, after) in enumerate(itertools.pairwise(conns), 1):
                    outcomes.append(_try_check(after, f"c{number}"))
                    before.commit()  # the check in flight before it ends
            finally:
                for conn in conns:
                    conn.commit()
                thread.join()
        assert outcomes[0] == "queued", f"checks got in while the rotation waited: {outcomes}"
        assert set(outcomes) <= {"queued", "changed"}, outcomes
        assert outcome == [None]
        assert store.get(KEYRING_KEY) == b"ring-2"
        assert [store.get(f"c{n}") for n in range(RELAYS + 1)] == [b"1"] + [None] * RELAYS
    finally:
        store.close()


def test_an_encrypting_write_of_a_third_node_waits_behind_a_waiting_rotation(
    pg_dsn: str,
) -> None:
    """Three nodes: the first's write holds its keyring check, the second's rotation waits
    for it, and the third's encrypting write queues behind the rotation (it used to check
    the keyring alongside the first's, and so keep the rotation out). Once the first's
    write commits the rotation is in; the third node's next write finds the new keyring,
    reloads it and commits under the new term."""
    stores = [PostgresStorage(pg_dsn), PostgresStorage(pg_dsn), _impatient(pg_dsn)]
    try:
        first, second, third = (AesGcmBarrier(store) for store in stores)
        first.initialize(ROOT_KEY)
        second.unseal(ROOT_KEY)
        third.unseal(ROOT_KEY)
        terms: list[int] = []
        with ExitStack() as joined, _write_held_after_its_keyring_check(pg_dsn, first) as outcome:
            thread, rotated = in_thread(lambda: terms.append(second.rotate()))
            joined.callback(thread.join)  # once the first's write is released
            wait_until_blocked(pg_dsn, thread, backends=2)  # the first's write, the rotation
            _assert_lock_timeout(lambda: third.put(OTHER, b"meanwhile"))
        assert (outcome, rotated, terms) == ([None], [None], [2])
        third.put(OTHER, b"after the rotation")
        assert third.keyring_info().term == 2
        assert (first.get(HELD), first.get(OTHER)) == (b"after", b"after the rotation")
    finally:
        for store in stores:
            store.close()


def _advisory_locks(ops: Sequence[Operation]) -> list[str]:
    """The modes of the advisory locks batch ``ops`` takes, in order (before any row)."""
    statements = [query for query, _ in _batch_statements(ops)]
    locks = [query for query in statements if "pg_advisory" in query]
    assert statements[: len(locks)] == locks
    return ["shared" if "_shared(" in query else "exclusive" for query in locks]


def test_a_batch_locks_each_key_it_expects_a_value_of_in_the_mode_of_its_check(
    pg_dsn: str,
) -> None:
    """Blind writes and claims of absent keys take no advisory lock (a batch of thousands
    of ``Put`` would fill the server's lock table); two keys whose hashes share the lock's
    four bytes take it once, in the stronger mode, and their batch commits."""
    mixed = [
        Expect(KEYRING_KEY, b"ring-1", shared=True),
        Expect("meta", b"1"),
        Put("meta", b"2"),
        Put("blind", b"x"),
        Expect("new", None, shared=True),
        Put("new", b"y"),
    ]
    assert sorted(_advisory_locks(mixed)) == ["exclusive", "shared"]
    assert _advisory_locks([Put(f"many/{i}", b"x") for i in range(100)]) == []
    one, two = "k153629", "k164064"  # found by search: the same first four bytes of SHA-256
    assert hashlib.sha256(one.encode()).digest()[:4] == hashlib.sha256(two.encode()).digest()[:4]
    both = [Expect(one, b"1", shared=True), Expect(two, b"2"), Put(two, b"3")]
    assert _advisory_locks(both) == ["exclusive"]
    assert _advisory_locks([Expect(one, b"1", shared=True), Expect(two, b"2", shared=True)]) == [
        "shared"
    ]
    store = PostgresStorage(pg_dsn)
    try:
        store.batch([Put(one, b"1"), Put(two, b"2")])
        store.batch(both)
        assert (store.get(one), store.get(two)) == (b"1", b"3")
    finally:
        store.close()


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
