"""SqliteStorage on an event loop: the deferred writes of one loop iteration share
one transaction (``_LoopTxn``), each member atomic, settled by ``settled_async``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from medsecrets.errors import ConflictError, StorageError
from medsecrets.storage.base import Delete, Expect, Put
from medsecrets.storage.sqlite import SqliteStorage
from tests.support.fsync import SlowFsync
from tests.support.storage import read_back


@pytest.fixture
def store(seamed: SqliteStorage) -> SqliteStorage:
    """The store of these tests: its log flushes go through ``seam``."""
    return seamed


def _committed(path: Path, key: str) -> bytes | None:
    """``key`` as another connection sees it (committed rows only)."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return None if row is None else bytes(row[0])


async def _member(store: SqliteStorage, write: Callable[[], object]) -> BaseException | None:
    """One task's deferred write, then its wait for durability; the error it met."""
    try:
        with store.deferring():
            write()
    except Exception as exc:
        return exc
    settled = store.settled_async()
    if settled is not None:
        try:
            await settled
        except StorageError as exc:
            return exc
    return None


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def _trace_commits(store: SqliteStorage) -> list[str]:
    """Record the statements of ``store``'s own connection on this thread (made by a
    first deferred write)."""
    statements: list[str] = []
    store._own.conn.set_trace_callback(statements.append)
    return statements


def test_writes_of_one_iteration_share_one_commit_and_one_fsync(
    store: SqliteStorage, path: Path, seam: SlowFsync
) -> None:
    async def scenario() -> None:
        assert await _member(store, lambda: store.put("warm", b"0")) is None
        statements = _trace_commits(store)
        flushes = seam.finished
        errors = await asyncio.gather(
            *(_member(store, lambda i=i: store.put(f"k{i}", b"v%d" % i)) for i in range(8))
        )
        assert errors == [None] * 8
        assert sum(s == "COMMIT" for s in statements) == 1
        assert sum(s == "BEGIN IMMEDIATE" for s in statements) == 1
        assert seam.finished == flushes + 1

    _run(scenario)
    assert [_committed(path, f"k{i}") for i in range(8)] == [b"v%d" % i for i in range(8)]


def test_a_member_whose_expectation_fails_fails_alone(store: SqliteStorage, path: Path) -> None:
    store.put("k", b"old")

    async def scenario() -> None:
        errors = await asyncio.gather(
            _member(store, lambda: store.batch([Expect("k", b"old"), Put("k", b"new")])),
            _member(store, lambda: store.batch([Expect("k", b"old"), Put("lost", b"x")])),
            _member(store, lambda: store.put("z", b"1")),
        )
        assert errors[0] is None and errors[2] is None
        assert isinstance(errors[1], ConflictError)  # checked against the member before it

    _run(scenario)
    assert _committed(path, "k") == b"new"
    assert _committed(path, "lost") is None
    assert _committed(path, "z") == b"1"


def test_a_member_failing_midway_is_undone_alone(store: SqliteStorage, path: Path) -> None:
    store.put("guarded", b"g")
    store._own_conn().execute(  # a real SQLite failure after the member's first statement
        "CREATE TRIGGER guard BEFORE DELETE ON kv WHEN OLD.key = 'guarded'"
        " BEGIN SELECT RAISE(ABORT, 'guarded'); END"
    )

    async def scenario() -> None:
        errors = await asyncio.gather(
            _member(store, lambda: store.put("a", b"1")),
            _member(store, lambda: store.batch([Put("b", b"2"), Delete("guarded")])),
            _member(store, lambda: store.put("c", b"3")),
        )
        assert errors[0] is None and errors[2] is None
        assert isinstance(errors[1], StorageError)
        assert "guarded" not in str(errors[1])  # SQLite's error name only

    _run(scenario)
    assert _committed(path, "a") == b"1" and _committed(path, "c") == b"3"
    assert _committed(path, "b") is None  # its put was undone with the failed delete
    assert _committed(path, "guarded") == b"g"


def test_a_member_that_ends_the_transaction_fails_every_member_before_it(
    store: SqliteStorage, path: Path
) -> None:
    store._own_conn().execute(
        "CREATE TRIGGER poison BEFORE INSERT ON kv WHEN NEW.key = 'poison'"
        " BEGIN SELECT RAISE(ROLLBACK, 'poison'); END"  # SQLite rolls back everything
    )

    async def scenario() -> None:
        errors = await asyncio.gather(
            _member(store, lambda: store.put("a", b"1")),
            _member(store, lambda: store.put("poison", b"2")),
            _member(store, lambda: store.put("c", b"3")),  # a new transaction
        )
        assert isinstance(errors[0], StorageError)  # through settled_async
        assert isinstance(errors[1], StorageError)
        assert errors[2] is None

    _run(scenario)
    assert _committed(path, "a") is None and _committed(path, "poison") is None
    assert _committed(path, "c") == b"3"


@pytest.mark.parametrize(
    "failure",
    [StorageError("storage is closed"), RuntimeError("an interrupt")],
    ids=["refused", "interrupted"],
)
def test_a_commit_that_fails_fails_every_member_and_writes_nothing(
    store: SqliteStorage, path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    async def scenario() -> None:
        async def refuse_then_write() -> BaseException | None:
            with store.deferring():
                store.put("a", b"1")

            def refused(writes: int = 1) -> int:
                raise failure

            monkeypatch.setattr(store._sync, "begin", refused)  # as after close()
            settled = store.settled_async()
            assert settled is not None
            try:
                await settled
            except StorageError as exc:
                return exc
            return None

        first, second = await asyncio.gather(
            refuse_then_write(), _member(store, lambda: store.put("b", b"2"))
        )
        assert isinstance(first, StorageError) and isinstance(second, StorageError)
        monkeypatch.undo()
        assert store.get("a") is None  # rolled back, the write lock free again
        assert await _member(store, lambda: store.put("c", b"3")) is None

    _run(scenario)
    assert _committed(path, "a") is None and _committed(path, "b") is None
    assert _committed(path, "c") == b"3"


def test_a_task_that_read_an_uncommitted_member_waits_for_its_durability(
    store: SqliteStorage, path: Path, seam: SlowFsync
) -> None:
    store.put("k", b"old")
    store.get("k")  # in the read cache

    async def scenario() -> None:
        async def reader() -> asyncio.Future[None] | None:
            assert store.get("k") == b"new"  # the open transaction, not the cache
            return store.settled_async()

        seam.open.clear()
        writer_error, settled = await asyncio.gather(
            _member(store, lambda: store.put("k", b"new")), _late(reader, seam)
        )
        assert writer_error is None
        assert settled is not None and settled.done() and settled.exception() is None

    _run(scenario)
    assert _committed(path, "k") == b"new"


async def _late(
    reader: Callable[[], Awaitable[asyncio.Future[None] | None]], seam: SlowFsync
) -> asyncio.Future[None] | None:
    """Run ``reader`` in the same iteration as the writer before it; check its
    future waits for the seam fsync, then release the fsync and await it."""
    settled = await reader()
    assert settled is not None
    await asyncio.sleep(0.1)
    assert not settled.done()  # committed now, but not durable
    seam.open.set()
    await asyncio.wait_for(asyncio.shield(settled), 5)
    return settled


def test_other_connections_see_members_only_once_committed(
    store: SqliteStorage, path: Path
) -> None:
    async def scenario() -> None:
        with store.deferring():
            store.put("k", b"v")
        seen: list[bytes | None] = []
        other = threading.Thread(target=lambda: seen.append(store.get("k")))
        other.start()  # a pooled connection, while the transaction is still open
        other.join()
        assert seen == [None]
        settled = store.settled_async()
        assert settled is not None
        await settled
        assert await asyncio.to_thread(store.get, "k") == b"v"

    _run(scenario)


def test_a_cancelled_waiter_cancels_no_other(store: SqliteStorage, seam: SlowFsync) -> None:
    async def scenario() -> None:
        seam.open.clear()
        first = asyncio.ensure_future(_member(store, lambda: store.put("a", b"1")))
        second = asyncio.ensure_future(_member(store, lambda: store.put("b", b"2")))
        await asyncio.sleep(0.1)
        first.cancel()
        seam.open.set()
        assert await second is None
        with pytest.raises(asyncio.CancelledError):
            await first

    _run(scenario)
    assert store.get("a") == b"1" and store.get("b") == b"2"  # committed all the same


def test_a_blocking_write_on_the_loop_thread_commits_the_open_transaction_first(
    store: SqliteStorage, path: Path
) -> None:
    async def scenario() -> None:
        with store.deferring():
            store.put("a", b"1")
        store.put("b", b"2")  # waits for the write lock the open transaction holds
        assert _committed(path, "a") == b"1" and _committed(path, "b") == b"2"
        settled = store.settled_async()
        if settled is not None:
            await settled

    _run(scenario)


def test_close_commits_an_open_loop_transaction(path: Path) -> None:
    store = SqliteStorage(path)

    async def scenario() -> None:
        with store.deferring():
            store.put("a", b"1")
        store.close()

    _run(scenario)
    assert read_back(path, "a") == b"1"


def test_a_transaction_left_open_by_a_stopped_loop_is_committed_by_the_next(
    store: SqliteStorage, path: Path
) -> None:
    loop = asyncio.new_event_loop()

    def write_and_stop() -> None:
        with store.deferring():
            store.put("a", b"1")
        loop.stop()  # the loop ends before its commit's callback runs

    loop.call_soon(write_and_stop)
    loop.run_forever()
    loop.close()
    assert store._loop_txn is not None  # left open

    async def next_loop() -> None:
        # the stale transaction is committed first, not joined (its loop would never
        # commit it: the write's settled_async() would never be done)
        assert await _member(store, lambda: store.put("b", b"2")) is None
        assert store.get("a") == b"1"

    _run(next_loop)
    assert _committed(path, "a") == b"1" and _committed(path, "b") == b"2"


def test_a_task_keeps_the_failure_of_an_earlier_transaction(
    store: SqliteStorage, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    begin = store._sync.begin

    def refuse_once(writes: int = 1) -> int:
        monkeypatch.setattr(store._sync, "begin", begin)
        raise StorageError("storage is closed")

    async def scenario() -> None:
        monkeypatch.setattr(store._sync, "begin", refuse_once)
        with store.deferring():
            store.put("a", b"1")
        await asyncio.sleep(0.01)  # its commit fails
        with store.deferring():
            store.put("b", b"2")  # a later transaction, committed
        settled = store.settled_async()
        assert settled is not None
        with pytest.raises(StorageError):
            await settled  # "a" failed: never covered up by "b"

    _run(scenario)
    assert _committed(path, "a") is None and _committed(path, "b") == b"2"


def _leave_open(
    store: SqliteStorage, key: str, *, wait: bool = False
) -> tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]:
    """A deferred write in a loop that stops in the same iteration (its transaction
    stays open); with ``wait``, a task is awaiting its ``settled_async()`` then (the
    loop and that task are returned, the loop still open)."""
    loop = asyncio.new_event_loop()

    async def write_and_stop() -> None:
        with store.deferring():
            store.put(key, b"1")
        settled = store.settled_async()
        loop.stop()
        if wait and settled is not None:
            await settled

    task = loop.create_task(write_and_stop())
    loop.run_forever()
    assert store._loop_txn is not None  # left open
    if not wait:
        loop.close()
    return loop, task


def test_a_stopped_loops_transaction_does_not_hold_the_lock_for_other_threads(
    store: SqliteStorage, path: Path
) -> None:
    _leave_open(store, "a")
    done = threading.Event()
    other = threading.Thread(target=lambda: (store.put("b", b"2"), done.set()))
    other.start()
    assert done.wait(5), "the blocking write waited for the stopped loop's transaction"
    other.join()
    assert _committed(path, "a") == b"1" and _committed(path, "b") == b"2"


def test_close_after_a_loop_stopped_with_a_waiter(path: Path) -> None:
    store = SqliteStorage(path)
    loop, waiter = _leave_open(store, "a", wait=True)
    store.close()  # commits it; the waiter's loop is not running: nothing raises
    loop.run_until_complete(asyncio.wait_for(waiter, 5))  # answered once the loop runs
    loop.close()
    assert read_back(path, "a") == b"1"
