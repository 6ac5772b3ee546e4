"""The read cache of SqliteStorage: never older than the last write, from any process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from medsecrets.errors import ConflictError, StorageError
from medsecrets.storage.base import Expect, Put
from medsecrets.storage.readcache import ReadCache
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.storage.stamp import ChangeStamp


class _Stamp:
    """A stamp the test moves by hand."""

    def __init__(self) -> None:
        self.value = 1

    def __call__(self) -> int:
        return self.value


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cache_serves_a_value_while_the_stamp_is_unchanged() -> None:
    stamp = _Stamp()
    cache = ReadCache(stamp)
    value, seen = cache.lookup("k")
    assert value is None
    cache.offer("k", b"v1", seen)
    assert cache.lookup("k")[0] == b"v1"
    stamp.value = 2
    assert cache.lookup("k")[0] is None  # any write anywhere drops everything


def test_a_value_fetched_across_a_write_is_not_kept() -> None:
    stamp = _Stamp()
    cache = ReadCache(stamp)
    _, seen = cache.lookup("k")
    stamp.value = 2  # a write committed (and bumped) while the value was being fetched
    cache.offer("k", b"old", seen)
    assert cache.lookup("k")[0] is None
    _, seen = cache.lookup("k")
    cache.offer("k", b"new", seen)
    assert cache.lookup("k")[0] == b"new"


def test_an_offer_preempted_by_a_write_and_a_lookup_is_not_served() -> None:
    """Another thread can run between ``offer``'s stamp check and its insert: a write bumps
    the stamp (and is acknowledged) and a lookup clears the cache for the new stamp; the
    value the offer then inserts was fetched before that write and must not be served
    under the new stamp (it was, until the entry expired)."""
    stamp = _Stamp()
    cache = ReadCache(stamp)
    _, seen = cache.lookup("k")  # stamp 1; "old" is fetched now

    class _Preempted:
        """The stamp as ``offer`` reads it (still 1), then the other thread's turn."""

        armed = True

        def __call__(self) -> int:
            value = stamp.value
            if self.armed:
                self.armed = False
                stamp.value = 2  # a write commits, bumps, is acknowledged
                cache.lookup("other")  # another reader: the cache now holds stamp 2
            return value

    cache._stamp = _Preempted()  # type: ignore[method-assign]
    cache.offer("k", b"old", seen)
    cache._stamp = stamp  # type: ignore[method-assign]
    assert cache.lookup("k")[0] is None


def test_entries_expire_and_size_is_bounded() -> None:
    stamp, clock = _Stamp(), _Clock()
    cache = ReadCache(stamp, max_bytes=10, max_age=2.0, clock=clock)
    _, seen = cache.lookup("a")
    cache.offer("a", b"12345", seen)
    clock.now += 2.5
    assert cache.lookup("a")[0] is None
    cache.offer("a", b"12345", seen)
    cache.offer("b", b"123456", seen)  # 11 bytes in all: the cache starts over
    assert cache.lookup("a")[0] is None
    assert cache.lookup("b")[0] == b"123456"
    cache.offer("c", b"x" * 11, seen)  # larger than the whole cache: never kept
    assert cache.lookup("c")[0] is None


def test_change_stamp_is_shared_through_the_file(tmp_path: Path) -> None:
    one = ChangeStamp(str(tmp_path / "db-stamp"))
    two = ChangeStamp(str(tmp_path / "db-stamp"))
    before = one.read()
    assert before == two.read() != 0
    two.bump()
    assert one.read() != before
    assert stat.S_IMODE(os.stat(tmp_path / "db-stamp").st_mode) == 0o600
    one.close()
    one.close()
    assert one.read() == 0
    two.close()


def test_a_write_through_another_storage_is_seen_at_once(tmp_path: Path) -> None:
    reader = SqliteStorage(tmp_path / "s.db")
    writer = SqliteStorage(tmp_path / "s.db")
    try:
        writer.put("k", b"v1")
        assert reader.get("k") == b"v1"
        assert reader.get("k") == b"v1"  # now cached
        writer.put("k", b"v2")
        assert reader.get("k") == b"v2"
        writer.delete("k")
        assert reader.get("k") is None
    finally:
        reader.close()
        writer.close()


def test_a_write_through_a_symlinked_path_is_seen_at_once(tmp_path: Path) -> None:
    """Both processes must share one change stamp, whatever path they opened the file by."""
    reader = SqliteStorage(tmp_path / "s.db")
    (tmp_path / "link.db").symlink_to(tmp_path / "s.db")
    writer = SqliteStorage(tmp_path / "link.db")
    try:
        writer.put("k", b"v1")
        assert reader.get("k") == b"v1"
        assert reader.get("k") == b"v1"  # now cached
        writer.put("k", b"v2")
        assert reader.get("k") == b"v2"
        assert not (tmp_path / "link.db-stamp").exists()
    finally:
        reader.close()
        writer.close()


def test_a_cached_read_runs_no_query(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "s.db")
    try:
        storage.put("k", b"v")
        assert storage.get("k") == b"v"
        statements: list[str] = []
        for conn in storage._idle:  # every pooled connection (one thread: one connection)
            conn.set_trace_callback(statements.append)
        for _ in range(5):
            assert storage.get("k") == b"v"
        assert statements == []
        storage.put("k", b"w")
        statements.clear()
        assert storage.get("k") == b"w"
        assert any("SELECT value FROM kv" in sql for sql in statements)
    finally:
        storage.close()


def test_a_failed_batch_still_invalidates(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "s.db")
    other = SqliteStorage(tmp_path / "s.db")
    try:
        storage.put("k", b"v1")
        assert other.get("k") == b"v1"
        with pytest.raises(ConflictError):
            storage.batch([Expect("k", b"nope"), Put("k", b"v2")])
        assert other.get("k") == b"v1"
    finally:
        storage.close()
        other.close()


_CHILD = (
    "import sys\n"
    "from medsecrets.storage.sqlite import SqliteStorage\n"
    "storage = SqliteStorage(sys.argv[1])\n"
    "storage.put('k', sys.argv[2].encode())\n"
    "storage.close()\n"
)


def test_a_write_from_another_process_is_seen_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    storage = SqliteStorage(path)
    try:
        storage.put("k", b"parent")
        assert storage.get("k") == b"parent"
        for n in range(3):
            subprocess.run([sys.executable, "-c", _CHILD, path, f"child-{n}"], check=True)
            assert storage.get("k") == f"child-{n}".encode()
    finally:
        storage.close()


def test_get_after_close_is_refused_even_when_cached(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "s.db")
    storage.put("k", b"v")
    assert storage.get("k") == b"v"
    storage.close()
    with pytest.raises(StorageError):
        storage.get("k")


def test_without_the_read_cache_every_read_queries_and_writes_still_bump(tmp_path: Path) -> None:
    plain = SqliteStorage(tmp_path / "s.db", read_cache=False)
    cached = SqliteStorage(tmp_path / "s.db")
    try:
        plain.put("k", b"v")
        assert cached.get("k") == b"v"  # now cached there
        statements: list[str] = []
        assert plain.get("k") == b"v"
        for conn in plain._idle:
            conn.set_trace_callback(statements.append)
        for _ in range(3):
            assert plain.get("k") == b"v"
        assert sum("SELECT value FROM kv" in sql for sql in statements) == 3
        plain.put("k", b"w")  # bumps the stamp: the other storage's cache drops its copy
        assert cached.get("k") == b"w"
    finally:
        plain.close()
        cached.close()
