"""DatabaseAuditDevice on a real SqliteStorage (and one test on a real PostgreSQL cluster)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.audit.database import DatabaseAuditDevice
from medsecrets.audit.device import AuditDevice, ChainHead
from medsecrets.audit.record import split_line
from medsecrets.errors import ConfigError, ConflictError, InvalidRequest
from medsecrets.storage.base import StorageBackend
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.testing.pgcluster import PostgresCluster, find_pg_bin
from tests.audit.chainmaker import make_log


def head_of(lines: list[bytes]) -> ChainHead:
    _prev, seq, digest = split_line(lines[-1])
    return ChainHead(seq=seq, hash=digest)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    if find_pg_bin() is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: refusing to skip)", pytrace=False)
        pytest.skip(reason)
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteStorage]:
    storage = SqliteStorage(tmp_path / "store.db")
    yield storage
    storage.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    backend: StorageBackend
    if request.param == "sqlite":
        backend = SqliteStorage(tmp_path / "store.db")
    else:
        from medsecrets.storage.postgres import PostgresStorage

        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        backend = PostgresStorage(cluster.create_database("audit_device"))
    yield backend
    backend.close()


def test_batch_resume_and_records(storage: StorageBackend) -> None:
    device = DatabaseAuditDevice("db", storage, node="n1")
    typed: AuditDevice = device
    assert typed.open() == ChainHead()
    lines = make_log(7).lines
    device.write(lines[:5])
    device.write([])
    assert storage.get("audit/n1/db/00000000000000000005") == lines[4]
    device.close()
    again = DatabaseAuditDevice("db", storage, node="n1")
    assert again.open() == head_of(lines[:5])
    again.write(lines[5:])
    assert again.open() == head_of(lines)
    assert list(again.records()) == lines
    assert list(again.records(since_seq=4)) == lines[4:]
    assert list(again.records(since_seq=7)) == []


def test_a_failing_batch_stores_none_of_its_lines(sqlite: SqliteStorage) -> None:
    device = DatabaseAuditDevice("db", sqlite, node="n1")
    lines = make_log(4).lines
    device.write(lines[:2])
    fork = make_log(3, seed=1).lines  # another writer's records 1..3
    with pytest.raises(ConflictError):
        device.write(fork[1:])  # record 2 exists with other bytes; 3 is new
    assert sqlite.get(device.key(3)) is None
    assert list(device.records()) == lines[:2]
    device.write(lines[2:])
    assert list(device.records()) == lines


def test_rewriting_the_same_records_is_accepted(sqlite: SqliteStorage) -> None:
    device = DatabaseAuditDevice("db", sqlite, node="n1")
    lines = make_log(3).lines
    device.write(lines)
    device.write(lines[1:])  # a retry of a batch that had committed
    assert list(device.records()) == lines


@pytest.mark.parametrize("count", [1, 2, 3, 5, 64, 65, 1000, 1025])
def test_open_finds_the_last_record(sqlite: SqliteStorage, count: int) -> None:
    device = DatabaseAuditDevice("db", sqlite, node="n1")
    lines = make_log(count).lines
    device.write(lines)
    assert device.open() == head_of(lines)
    assert len(list(device.records())) == count


def test_chains_of_other_devices_and_nodes_are_separate(sqlite: SqliteStorage) -> None:
    mine = DatabaseAuditDevice("db", sqlite, node="n1")
    lines = make_log(3).lines
    mine.write(lines)
    for other in (
        DatabaseAuditDevice("db", sqlite, node="n2"),
        DatabaseAuditDevice("db2", sqlite, node="n1"),
        DatabaseAuditDevice("d", sqlite, node="n1"),  # a prefix of "db"
    ):
        assert other.open() == ChainHead()
        assert list(other.records()) == []
    sqlite.put("audit/n1/db0", b"not mine")  # shares a string prefix, not the key prefix
    assert mine.open() == head_of(lines)


def test_foreign_keys_under_the_prefix_are_refused(sqlite: SqliteStorage) -> None:
    device = DatabaseAuditDevice("db", sqlite, node="n1")
    device.write(make_log(2).lines)
    sqlite.put("audit/n1/db/zzz", b"junk")
    with pytest.raises(ConfigError):
        device.open()


def test_bad_input_is_refused(sqlite: SqliteStorage) -> None:
    for name, node in (("", "n"), ("a/b", "n"), ("a", ""), ("a", "n/1")):
        with pytest.raises(ConfigError):
            DatabaseAuditDevice(name, sqlite, node=node)
    with pytest.raises(InvalidRequest):
        DatabaseAuditDevice("db", sqlite, node="n").write([b"not a record\n"])
