"""WalSync: commits made durable by one fsync thread, many per fsync, failure final."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medsecrets.errors import StorageError
from medsecrets.storage.walsync import WalSync


class GatedFsync:
    """An fsync seam that counts flushes and can be held shut or made to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.error: OSError | None = None
        self.inodes: list[int] = []
        self.threads: list[str] = []

    def __call__(self, fd: int) -> None:
        self.inodes.append(os.fstat(fd).st_ino)
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.open.wait(10)
        self.calls += 1
        if self.error is not None:
            raise self.error
        os.fsync(fd)


def commit(sync: WalSync) -> int:
    """One commit as ``SqliteStorage`` makes it: begun, then its ``COMMIT`` returned."""
    seq = sync.begin()
    sync.done(seq)
    return seq


@pytest.fixture
def wal(tmp_path: Path) -> Path:
    path = tmp_path / "store.db-wal"
    path.write_bytes(b"frames")
    return path


@pytest.fixture
def gate() -> GatedFsync:
    return GatedFsync()


@pytest.fixture
def make(wal: Path, gate: GatedFsync) -> Iterator[Callable[..., WalSync]]:
    made: list[WalSync] = []

    def build(**kw: object) -> WalSync:
        sync = WalSync(str(wal), fsync=gate, **kw)  # type: ignore[arg-type]
        made.append(sync)
        return sync

    yield build
    gate.open.set()
    for sync in made:
        sync.close()


def test_a_blocking_waiter_makes_the_fsync_itself(
    make: Callable[..., WalSync], gate: GatedFsync
) -> None:
    sync = make()
    gate.open.clear()
    seq = commit(sync)
    assert sync.pending == seq
    assert not gate.entered.wait(0.1)  # nobody waits: nothing flushed yet
    waiter = threading.Thread(target=sync.wait, args=(seq,), name="the-writer")
    waiter.start()
    assert gate.entered.wait(5)
    waiter.join(0.2)
    assert waiter.is_alive()  # still waiting: the fsync has not returned
    gate.open.set()
    waiter.join(5)
    assert not waiter.is_alive()
    assert sync.pending == 0 and gate.calls == 1
    assert gate.threads == ["the-writer"]  # no hand-off to another thread


def test_commits_made_during_an_fsync_share_the_next_one(
    make: Callable[..., WalSync], gate: GatedFsync
) -> None:
    sync = make()
    gate.open.clear()
    first = threading.Thread(target=sync.wait, args=(commit(sync),))
    first.start()
    assert gate.entered.wait(5)  # the first fsync is under way, held
    last = 0
    for _ in range(20):
        last = commit(sync)
    others = [threading.Thread(target=sync.wait, args=(last,)) for _ in range(5)]
    for thread in others:
        thread.start()
    gate.open.set()
    for thread in (first, *others):
        thread.join(5)
        assert not thread.is_alive()
    assert gate.calls == 2  # 21 commits, six waiters, two flushes


def test_wait_async_resolves_only_after_the_fsync(
    make: Callable[..., WalSync], gate: GatedFsync
) -> None:
    sync = make()

    async def scenario() -> None:
        gate.open.clear()
        seq = commit(sync)
        future = sync.wait_async(seq)
        await asyncio.sleep(0.1)
        assert not future.done()
        gate.open.set()
        await asyncio.wait_for(future, 5)
        assert gate.calls == 1
        assert gate.threads == ["medsecrets-walsync"]  # an event loop never flushes
        done = sync.wait_async(seq)  # already durable: a finished future
        assert done.done()

    asyncio.run(scenario())


def test_a_failed_fsync_fails_every_waiter_and_every_later_commit(
    make: Callable[..., WalSync], gate: GatedFsync
) -> None:
    sync = make()
    gate.error = OSError(errno.EIO, "Input/output error")

    async def scenario() -> None:
        seq = commit(sync)
        with pytest.raises(StorageError, match="fsync failed"):
            await asyncio.wait_for(sync.wait_async(seq), 5)

    asyncio.run(scenario())
    with pytest.raises(StorageError, match="no further writes"):
        sync.wait(1)
    with pytest.raises(StorageError):
        sync.check()
    assert sync.failed
    with pytest.raises(StorageError, match="no further writes"):
        sync.begin()  # a commit is refused before it starts


def test_a_missing_log_is_a_failure_not_nothing_to_sync(tmp_path: Path, gate: GatedFsync) -> None:
    sync = WalSync(str(tmp_path / "absent.db-wal"), fsync=gate)
    try:
        with pytest.raises(StorageError, match="fsync failed"):
            sync.wait(commit(sync))
        assert gate.calls == 0
    finally:
        sync.close()


def test_a_begun_commit_is_pending_but_not_flushed_before_it_is_done(
    make: Callable[..., WalSync], gate: GatedFsync
) -> None:
    sync = make()
    seq = sync.begin()  # COMMIT under way: readers may see it already
    assert sync.pending == seq
    waiter = threading.Thread(target=sync.wait, args=(seq,))
    waiter.start()
    assert not gate.entered.wait(0.2)  # no fsync may claim it before its frames are written
    sync.done(seq)
    waiter.join(5)
    assert not waiter.is_alive()
    assert gate.calls == 1 and sync.pending == 0


def test_each_failure_is_a_fresh_error(make: Callable[..., WalSync], gate: GatedFsync) -> None:
    sync = make()
    gate.error = OSError(errno.EIO, "Input/output error")
    seq = commit(sync)
    errors = []
    for _ in range(3):
        with pytest.raises(StorageError) as info:
            sync.wait(seq)
        errors.append(info.value)
    assert len({id(e) for e in errors}) == 3  # tracebacks never pile up on one instance
    assert len({str(e) for e in errors}) == 1


def test_a_commit_after_close_is_refused(make: Callable[..., WalSync]) -> None:
    sync = make()
    sync.wait(commit(sync))
    sync.close()
    with pytest.raises(StorageError, match="closed"):
        sync.begin()


def test_a_replaced_log_is_reopened(
    make: Callable[..., WalSync], gate: GatedFsync, wal: Path
) -> None:
    sync = make()
    sync.wait(commit(sync))
    first = os.stat(wal).st_ino
    wal.unlink()  # the old inode stays open in the sync: its number cannot be reused
    wal.write_bytes(b"new frames")
    sync.wait(commit(sync))
    assert gate.inodes == [first, os.stat(wal).st_ino]
    assert first != os.stat(wal).st_ino


def test_checkpoints_run_on_the_sync_thread_every_n_commits(
    make: Callable[..., WalSync], caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def checkpoint() -> None:
        ran.append(threading.current_thread().name)
        if len(ran) == 1:
            raise OSError("checkpoint trouble")

    sync = make(checkpoint=checkpoint, checkpoint_every=5)
    for _ in range(4):
        sync.wait(commit(sync))
    assert ran == []
    with caplog.at_level(logging.WARNING, logger="medsecrets.storage.walsync"):
        sync.wait(commit(sync))  # the fifth commit
        sync.close()  # the checkpoint ran after the fsync that settled it
    assert ran == ["medsecrets-walsync"]
    assert "checkpoint failed: OSError" in caplog.text
    assert "trouble" not in caplog.text  # the type only, never a message


def test_checkpoints_count_the_writes_a_commit_holds(make: Callable[..., WalSync]) -> None:
    ran: list[int] = []
    sync = make(checkpoint=lambda: ran.append(1), checkpoint_every=10)
    seq = sync.begin(writes=6)  # a group commit of six writes
    sync.done(seq)
    sync.wait(seq)
    assert ran == []
    seq = sync.begin(writes=4)  # the tenth write: one checkpoint, as ten commits of one
    sync.done(seq)
    sync.wait(seq)
    sync.close()
    assert ran == [1]


def test_close_makes_pending_commits_durable(
    make: Callable[..., WalSync], gate: GatedFsync
) -> None:
    sync = make()
    commit(sync)
    commit(sync)  # nobody waits for either
    assert gate.calls == 0
    sync.close()
    assert sync.pending == 0
    assert gate.calls == 1  # one flush covers both
    sync.close()  # idempotent


def test_an_interrupted_flush_is_retried_by_the_next_waiter(
    make: Callable[..., WalSync], gate: GatedFsync
) -> None:
    sync = make()
    seq = commit(sync)
    gate.error = KeyboardInterrupt()  # type: ignore[assignment]  # a signal during the flush
    with pytest.raises(KeyboardInterrupt):
        sync.wait(seq)
    gate.error = None
    sync.wait(seq)  # not stuck behind a flush that never ended
    assert sync.pending == 0 and not sync.failed
    sync.close()  # and the thread still stops
