"""SqliteStorage: the conformance suite plus SQLite-specific guarantees."""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from medsecrets.errors import StorageError
from medsecrets.storage import sqlite as sqlite_module
from medsecrets.storage.base import Put
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.storage.testing import (
    StorageConformance,
    StorageOpener,
    UnsafeOpener,
    _worker_put,
    list_all,
    run_processes,
)


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
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


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


def test_effective_settings_are_wal_and_full(store: SqliteStorage, path: Path) -> None:
    store.put("k", b"v")
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    conn = store._checkout()
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
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
    # Simulate a connection whose effective synchronous setting ends up below FULL.
    monkeypatch.setattr(
        sqlite_module, "_SETUP_PRAGMAS", ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
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
