"""SqliteStorage given a damaged or hostile file: refused at open with a ``StorageError``
that says what is wrong, nothing written into it; or, for damage found later, a
``StorageError`` per operation, never a raw ``sqlite3`` exception."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from medsecrets.errors import StorageError, StorageUnavailable
from medsecrets.storage.base import Put, WriteLockBusy
from medsecrets.storage.sqlite import SqliteStorage


def _store_with(path: Path, count: int) -> None:
    store = SqliteStorage(path)
    try:
        store.batch([Put(f"k{n:05d}", os.urandom(200)) for n in range(count)])
    finally:
        store.close()


@pytest.mark.parametrize("content", [b"x", b"patient: J. Doe\n", b"\0" * 4096])
def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    """SQLite took a one-byte file for an empty database and wrote a new one over it."""
    path = tmp_path / "store.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="not a SQLite database"):
        SqliteStorage(path)
    assert path.read_bytes() == content


def test_a_medsecrets_file_without_its_kv_table_is_refused(tmp_path: Path) -> None:
    """A marked file whose kv table is gone is damaged (or not what it claims): it used to
    get a new, empty kv table, so the server found an uninitialised store there."""
    path = tmp_path / "store.db"
    _store_with(path, 3)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE kv")
    with pytest.raises(StorageError, match="has no kv table"):
        SqliteStorage(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'kv'").fetchone() == (
            0,
        )


def test_a_missing_leases_table_is_made_again(tmp_path: Path) -> None:
    """Leases are short-lived locks, not data: a missing table is simply made again."""
    path = tmp_path / "store.db"
    _store_with(path, 3)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE leases")
    store = SqliteStorage(path)
    try:
        assert store.get("k00001") is not None
        assert store.acquire_lease("leader", "me", 30) is not None
    finally:
        store.close()


def test_tables_of_another_shape_are_refused_at_open(tmp_path: Path) -> None:
    """A view named kv, or a leases table of other columns, passed the open and failed at
    the first write or lease as 'sqlite batch failed: SQLITE_ERROR'."""
    view = tmp_path / "view.db"
    _store_with(view, 3)
    with sqlite3.connect(view) as conn:
        conn.execute("ALTER TABLE kv RENAME TO kv_data")
        conn.execute("CREATE VIEW kv AS SELECT key, value FROM kv_data")
    with pytest.raises(StorageError, match="kv table is not a medsecrets one"):
        SqliteStorage(view)
    leases = tmp_path / "leases.db"
    _store_with(leases, 3)
    with sqlite3.connect(leases) as conn:
        conn.execute("DROP TABLE leases")
        conn.execute("CREATE TABLE leases (x)")
    with pytest.raises(StorageError, match="leases table is not a medsecrets one"):
        SqliteStorage(leases)


def test_extra_tables_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _store_with(path, 3)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    store = SqliteStorage(path)
    try:
        assert len(store.list("k").keys) == 3
    finally:
        store.close()


def test_a_truncated_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _store_with(path, 2000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StorageError, match="SQLITE_CORRUPT"):
        SqliteStorage(path)


def test_corrupted_pages_fail_each_read_with_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _store_with(path, 2000)
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(data), 4096 * 5):  # every fifth page, not page 1
        data[offset : offset + 200] = os.urandom(200)
    path.write_bytes(bytes(data))
    store = SqliteStorage(path, read_cache=False)
    try:
        errors = []
        for n in range(2000):
            try:
                store.get(f"k{n:05d}")
            except StorageError as exc:
                errors.append(str(exc))
        assert errors
        assert set(errors) == {"sqlite get failed: SQLITE_CORRUPT"}
        with pytest.raises(StorageError, match="SQLITE_CORRUPT"):
            store.list("", limit=5000)
    finally:
        store.close()


def test_a_write_lock_held_outside_past_the_busy_timeout_is_a_clear_error(
    tmp_path: Path,
) -> None:
    """Another program holds the file's write lock: a blocking write waits ``timeout`` and
    then fails saying so. It raised ``WriteLockBusy`` ('sqlite write lock busy'), whose
    contract is a deferred write's: 'run it again outside deferring()'."""
    path = tmp_path / "store.db"
    store = SqliteStorage(path, timeout=0.2)
    outsider = sqlite3.connect(path, isolation_level=None)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        for write in (
            lambda: store.put("k", b"v"),
            lambda: store.batch([Put("k", b"v"), Put("j", b"v")]),
            lambda: store.acquire_lease("leader", "me", 30),
        ):
            with pytest.raises(StorageUnavailable) as info:  # 503, not 500
                write()
            assert not isinstance(info.value, WriteLockBusy)
            assert str(info.value) == (
                "sqlite write lock held by another connection for over 0.2 s (SQLITE_BUSY):"
                " nothing was written"
            )
        outsider.execute("ROLLBACK")
        assert store.get("k") is None
        store.put("k", b"v")  # free again
    finally:
        outsider.close()
        store.close()
