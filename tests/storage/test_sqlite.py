"""SqliteStorage: the conformance suite plus SQLite-specific guarantees."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from medsecrets.errors import ConflictError, StorageError
from medsecrets.storage import sqlite as sqlite_module
from medsecrets.storage.base import Expect, Put, WriteLockBusy
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.storage.testing import (
    StorageConformance,
    StorageOpener,
    UnsafeOpener,
    _worker_put,
    list_all,
    run_processes,
)
from tests.support.fsync import SlowFsync
from tests.support.storage import read_back


class TestSqliteConformance(StorageConformance):
    @pytest.fixture
    def opener(self, tmp_path: Path) -> StorageOpener:
        return functools.partial(SqliteStorage, tmp_path / "store.db")

    @pytest.fixture
    def unsafe_openers(self) -> Sequence[tuple[str, UnsafeOpener]]:
        return [
            ("journal_mode", functools.partial(SqliteStorage, ":memory:")),
            ("journal_mode", functools.partial(SqliteStorage, "")),
        ]


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStorage]:
    s = SqliteStorage(path)
    yield s
    s.close()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_files_are_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "private.db"
    old = os.umask(umask)
    try:
        s = SqliteStorage(path)
        try:
            s.put("k", b"v")
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            for f in files:
                assert f.exists(), f
                assert _mode(f) == 0o600, (f, oct(_mode(f)))
        finally:
            s.close()
    finally:
        os.umask(old)


def test_effective_settings_are_wal_and_normal_synced_by_walsync(
    store: SqliteStorage, path: Path
) -> None:
    store.put("k", b"v")
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    conn = store._checkout()
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # WalSync fsyncs
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # WalSync's thread
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    finally:
        store._checkin(conn)


def test_rollback_journal_file_is_converted_to_wal(path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode=DELETE")
    raw.execute("CREATE TABLE unrelated (x)")
    raw.commit()
    raw.close()
    s = SqliteStorage(path)
    try:
        s.put("k", b"v")
    finally:
        s.close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


@pytest.mark.parametrize("special", [":memory:", ""])
def test_in_memory_paths_are_refused(special: str) -> None:
    with pytest.raises(StorageError, match="journal_mode"):
        SqliteStorage(special)


def test_weaker_synchronous_is_refused(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a connection whose effective synchronous setting ends up below NORMAL.
    monkeypatch.setattr(
        sqlite_module, "_SETUP_PRAGMAS", ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=OFF")
    )
    with pytest.raises(StorageError, match="synchronous"):
        SqliteStorage(path)


def test_refused_settings_name_no_path_content(path: Path) -> None:
    path.write_bytes(b"CANARY-not-a-database" * 100)
    with pytest.raises(StorageError) as info:
        SqliteStorage(path)
    assert "CANARY" not in str(info.value)
    assert "SQLITE_NOTADB" in str(info.value)


def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        SqliteStorage(tmp_path / "no" / "such" / "dir" / "store.db")


def test_values_are_stored_as_given(store: SqliteStorage, path: Path) -> None:
    # Storage is untrusted and stores bytes as they come (the barrier encrypts above it).
    store.batch([Put("a", b"\x00\x01"), Put("b", b"")])
    raw = sqlite3.connect(path)
    try:
        rows = raw.execute("SELECT key, value FROM kv ORDER BY key").fetchall()
    finally:
        raw.close()
    assert rows == [("a", b"\x00\x01"), ("b", b"")]


def test_connections_are_reused(store: SqliteStorage) -> None:
    store.put("k", b"v")
    for _ in range(50):
        assert store.get("k") == b"v"
    assert len(store._idle) == 1


@pytest.mark.slow
def test_processes_create_a_new_file_at_once(tmp_path: Path) -> None:
    # No one opened the file first: schema creation and the switch to WAL race.
    path = tmp_path / "fresh.db"
    opener = functools.partial(SqliteStorage, path)
    run_processes(_worker_put, [(opener, i, 20) for i in range(4)])
    s = SqliteStorage(path)
    try:
        assert len(list_all(s, "proc/")) == 80
    finally:
        s.close()


# -- durability through WalSync ------------------------------------------------


def test_a_write_returns_only_after_the_log_is_fsynced(
    seamed: SqliteStorage, seam: SlowFsync
) -> None:
    seamed.put("k", b"v")
    assert seam.finished >= 1
    assert seam.files and all(name.endswith("store.db-wal") for name in seam.files)
    seamed.batch([Put("a", b"1"), Put("b", b"2")])
    assert seam.finished >= 2


def test_concurrent_writes_share_fsyncs(seamed: SqliteStorage, seam: SlowFsync) -> None:
    """The first flush is held until each of the eight threads has committed a write, so
    writes wait together whatever the scheduling of the threads."""
    begun = seamed._sync._writes  # (opening the store wrote its schema)
    seam.open.clear()
    with ThreadPoolExecutor(8) as pool:
        written = pool.map(lambda i: seamed.put(f"k{i}", b"v"), range(200))
        try:
            deadline = time.monotonic() + 10
            while seamed._sync._writes < begun + 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert seamed._sync._writes == begun + 8  # one write in the held flush, seven behind
        finally:
            seam.open.set()
        list(written)
    assert all(seamed.get(f"k{i}") == b"v" for i in range(200))
    assert seam.finished < 200  # group commit: fewer flushes than writes


def test_deferred_writes_are_visible_at_once_and_settle_after_the_fsync(
    path: Path, seam: SlowFsync
) -> None:
    s = SqliteStorage(path, _fsync=seam)

    async def scenario() -> None:
        assert s.settled_async() is None  # nothing committed yet
        seam.open.clear()
        with s.deferring():
            s.put("k", b"v")  # returns although the fsync is held
            s.batch([Put("a", b"1")])
        assert s.get("k") == b"v" and s.get("a") == b"1"
        settled = s.settled_async()
        assert settled is not None
        await asyncio.sleep(0.1)
        assert not settled.done()
        seam.open.set()
        await asyncio.wait_for(settled, 5)
        assert s.settled_async() is None

    try:
        asyncio.run(scenario())
    finally:
        seam.open.set()
        s.close()
    assert read_back(path, "k") == b"v"


def test_deferring_applies_to_its_own_storage_and_context_only(
    seamed: SqliteStorage, seam: SlowFsync, tmp_path: Path
) -> None:
    other = SqliteStorage(tmp_path / "other.db")
    try:
        with seamed.deferring():
            other.put("x", b"1")  # another storage: durable on return as ever
            assert other.settled_async() is None
        seamed.put("y", b"2")  # after the block: durable on return
        assert seam.finished >= 1 and seamed.settled_async() is None
    finally:
        other.close()


def test_a_deferred_conflict_raises_and_writes_nothing(store: SqliteStorage) -> None:
    store.put("k", b"v1")
    with store.deferring(), pytest.raises(ConflictError):
        store.batch([Expect("k", b"other"), Put("k", b"v2"), Put("z", b"1")])
    assert store.get("k") == b"v1" and store.get("z") is None


def test_a_failed_log_fsync_fails_the_write_and_every_later_one(
    seamed: SqliteStorage, seam: SlowFsync
) -> None:
    seamed.put("ok", b"1")
    seam.error = OSError(errno.EIO, "CANARY-io")
    with pytest.raises(StorageError, match="fsync failed") as first:
        seamed.put("k", b"v")
    assert "Input/output error" in str(first.value)  # the errno's text, not the message
    assert "CANARY" not in str(first.value)
    with pytest.raises(StorageError, match="no further writes"):
        seamed.put("later", b"x")
    with pytest.raises(StorageError), seamed.deferring():
        seamed.put("later", b"x")
    assert seamed.get("later") is None  # refused before committing


def test_checkpoints_copy_the_log_into_the_database_off_the_writers(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    real = SqliteStorage._checkpoint

    def spy(self: SqliteStorage) -> None:
        ran.append(threading.current_thread().name)
        real(self)

    monkeypatch.setattr(SqliteStorage, "_checkpoint", spy)
    s = SqliteStorage(path)
    try:
        before = path.stat().st_size
        for i in range(600):  # over two checkpoint intervals (256 commits each)
            s.put(f"k{i:04d}", os.urandom(512))
        s._sync.close()  # let the sync thread finish its last checkpoint
        assert ran == ["medsecrets-walsync"] * 2
        assert path.stat().st_size >= before + 400 * 512  # 512 rows are in the database
    finally:
        s.close()


def test_a_symlinked_database_path_fsyncs_the_real_log(tmp_path: Path) -> None:
    real = tmp_path / "real" / "store.db"
    real.parent.mkdir()
    link = tmp_path / "link.db"
    SqliteStorage(real).close()
    link.symlink_to(real)
    seam = SlowFsync()
    s = SqliteStorage(link, _fsync=seam)
    try:
        s.put("k", b"v")
        assert seam.finished >= 1
        assert set(seam.files) == {str(real) + "-wal"}  # SQLite's log, beside the real file
    finally:
        s.close()


def test_close_lets_a_write_under_way_finish_durably_then_refuses_writes(path: Path) -> None:
    seam = SlowFsync()
    s = SqliteStorage(path, _fsync=seam)
    s.put("first", b"1")
    seam.open.clear()  # the next flush is held
    flushes = len(seam.files)
    writer = threading.Thread(target=s.put, args=("k", b"v"))
    writer.start()
    closer = threading.Thread(target=s.close)
    deadline = time.monotonic() + 10
    while len(seam.files) == flushes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(seam.files) == flushes + 1  # the write's flush is under way, held
    closer.start()
    while not s._sync._closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s._sync._closed  # the close is under way, waiting for that flush
    seam.open.set()
    writer.join(5)
    closer.join(5)
    assert not writer.is_alive() and not closer.is_alive()
    with pytest.raises(StorageError, match="closed"):
        s.put("after", b"x")
    assert read_back(path, "k") == b"v"


def test_a_deferred_write_never_waits_for_a_lock(path: Path, tmp_path: Path) -> None:
    s = SqliteStorage(path)
    try:
        s.put("k", b"v1")
        with s._txn_lock, s.deferring(), pytest.raises(WriteLockBusy):  # this process's
            s.put("k", b"v2")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's (or connection's)
            with s.deferring(), pytest.raises(WriteLockBusy):
                s.put("k", b"v3")
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert s.get("k") == b"v1"  # nothing written by the refused attempts
        with s.deferring():
            s.put("k", b"v4")  # the lock free again: written
        assert s.get("k") == b"v4"
    finally:
        s.close()


def test_a_deferred_writer_reads_on_its_own_connection_and_sees_every_commit(path: Path) -> None:
    s = SqliteStorage(path, read_cache=False)
    try:
        with s.deferring():
            s.put("mine", b"1")  # this thread now has a connection of its own
        own = s._own.conn
        calls: list[str] = []
        own.set_trace_callback(calls.append)
        other = threading.Thread(target=s.put, args=("theirs", b"2"))  # a pooled connection
        other.start()
        other.join()
        assert s.get("theirs") == b"2" and s.get("mine") == b"1"
        assert sum("SELECT value FROM kv" in c for c in calls) == 2  # read on its own
        own.set_trace_callback(None)
    finally:
        s.close()


def test_the_log_restarts_after_checkpoints_instead_of_growing(path: Path) -> None:
    s = SqliteStorage(path)
    try:
        sizes = []
        for i in range(1500):  # ~6 checkpoint intervals; unbounded, the log would pass 25 MB
            s.put(f"k{i:05d}", os.urandom(1024))
            if i % 250 == 249:
                sizes.append(os.path.getsize(str(path) + "-wal"))
        assert max(sizes) < 12 * 1024 * 1024
        assert sizes[-1] <= sizes[2] * 1.5  # a plateau, not a climb
    finally:
        s.close()


def test_a_file_of_another_application_or_a_newer_format_is_refused(tmp_path: Path) -> None:
    """Not taken for an uninitialised store (which an init would then write into)."""
    mine = tmp_path / "mine.db"
    SqliteStorage(mine).close()
    with sqlite3.connect(mine) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x4D534543
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    newer = tmp_path / "newer.db"
    SqliteStorage(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match="format 99, newer than this medsecrets reads"):
        SqliteStorage(newer)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("PRAGMA application_id = 42")
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StorageError, match="not a medsecrets database"):
        SqliteStorage(other)
    odd = tmp_path / "odd.db"
    with sqlite3.connect(odd) as conn:
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB, extra INT)")
    with pytest.raises(StorageError, match="kv table is not a medsecrets one"):
        SqliteStorage(odd)
    with sqlite3.connect(odd) as conn:  # refused: nothing was stamped
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0
    legacy = tmp_path / "legacy.db"  # made before files were stamped: stamped now
    with sqlite3.connect(legacy) as conn:
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        conn.execute("INSERT INTO kv VALUES ('k', x'76')")
    old = SqliteStorage(legacy)
    try:
        assert old.get("k") == b"v"
    finally:
        old.close()
    with sqlite3.connect(legacy) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
