"""PostgresStorage: the conformance suite on a real throwaway cluster, plus PG-specific checks."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from medsecrets.errors import ConflictError, StorageError
from medsecrets.storage.base import Expect, Put
from medsecrets.storage.postgres import PostgresStorage
from medsecrets.storage.testing import (
    StorageConformance,
    StorageOpener,
    UnsafeOpener,
    _worker_put,
    list_all,
    run_processes,
)
from medsecrets.testing.pgcluster import PostgresCluster

from .conftest import new_database

pytestmark = pytest.mark.postgres


class TestPostgresConformance(StorageConformance):
    @pytest.fixture
    def opener(self, pg_dsn: str) -> StorageOpener:
        return functools.partial(PostgresStorage, pg_dsn)

    @pytest.fixture
    def unsafe_openers(
        self, pg_cluster: PostgresCluster, pg_cluster_fsync_off: PostgresCluster
    ) -> Iterator[Sequence[tuple[str, UnsafeOpener]]]:
        made: list[str] = []
        openers: list[tuple[str, UnsafeOpener]] = []
        for value in ("off", "local"):
            name, dsn = new_database(pg_cluster)
            made.append(name)
            pg_cluster.execute(f"ALTER DATABASE {name} SET synchronous_commit = {value}")
            openers.append(("synchronous_commit", functools.partial(PostgresStorage, dsn)))
        openers.append(("fsync", functools.partial(PostgresStorage, pg_cluster_fsync_off.dsn)))
        yield openers
        for name in made:
            pg_cluster.drop_database(name)


def test_durable_synchronous_commit_values_are_accepted(pg_cluster: PostgresCluster) -> None:
    name, dsn = new_database(pg_cluster)
    try:
        for value in ("on", "remote_write", "remote_apply"):
            pg_cluster.execute(f"ALTER DATABASE {name} SET synchronous_commit = {value}")
            PostgresStorage(dsn).close()
    finally:
        pg_cluster.drop_database(name)


def test_refusal_leaves_no_tables(pg_cluster: PostgresCluster) -> None:
    name, dsn = new_database(pg_cluster)
    try:
        pg_cluster.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
        with pytest.raises(StorageError, match="synchronous_commit"):
            PostgresStorage(dsn)
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT to_regclass('medsecrets_kv')").fetchone()
        assert row == (None,)
    finally:
        pg_cluster.drop_database(name)


def test_tables_use_c_collation_and_bytea(pg_dsn: str) -> None:
    PostgresStorage(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, collation_name FROM information_schema.columns"
            " WHERE table_name = 'medsecrets_kv' ORDER BY column_name"
        ).fetchall()
    assert ("key", "text", "C") in rows
    assert ("value", "bytea", None) in rows


def test_existing_table_with_wrong_collation_is_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            'CREATE TABLE medsecrets_kv (key_hash BYTEA PRIMARY KEY, key TEXT COLLATE "POSIX"'
            " NOT NULL, value BYTEA NOT NULL)"
        )
    # "POSIX" sorts like "C" but is a different collation: refuse rather than guess.
    with pytest.raises(StorageError, match="COLLATE"):
        PostgresStorage(pg_dsn)


def test_open_is_idempotent(pg_dsn: str) -> None:
    first = PostgresStorage(pg_dsn)
    first.put("k", b"v")
    second = PostgresStorage(pg_dsn)
    try:
        assert second.get("k") == b"v"
    finally:
        first.close()
        second.close()


def _end_other_connections(dsn: str, *, wait_ms: int = 0) -> int:
    """``pg_terminate_backend`` every other connection to the database (with ``wait_ms``,
    waiting for each to be gone, as after a restart); how many were ended."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid, %s)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            (wait_ms,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_reads_survive_connections_the_server_ended(pg_dsn: str) -> None:
    """A server restart ends every pooled connection: each would fail one request. A read
    is tried again on a fresh connection; a write is not (its outcome is unknown)."""
    store = PostgresStorage(pg_dsn, min_size=4, max_size=4)
    try:
        store.put("k", b"v")
        with ThreadPoolExecutor(4) as pool:  # four connections in use, then idle
            assert list(pool.map(lambda _: store.get("k"), range(16))) == [b"v"] * 16
        assert _end_other_connections(pg_dsn) >= 2
        for _ in range(8):
            assert store.get("k") == b"v"
            assert store.list("").keys == ("k",)
    finally:
        store.close()


@pytest.mark.slow
def test_processes_create_the_schema_at_once(pg_dsn: str) -> None:
    # No one opened the database first: four processes race to create the tables.
    opener = functools.partial(PostgresStorage, pg_dsn, min_size=1, max_size=2)
    run_processes(_worker_put, [(opener, i, 20) for i in range(4)])
    s = PostgresStorage(pg_dsn)
    try:
        assert len(list_all(s, "proc/")) == 80
    finally:
        s.close()


def test_insert_race_on_expected_absent_key_is_a_conflict(pg_dsn: str) -> None:
    store = PostgresStorage(pg_dsn)
    outcome: list[BaseException | None] = []
    try:
        with psycopg.connect(pg_dsn) as rival:
            # The rival inserts the key and holds its transaction open...
            store.put("warm", b"up")
            with rival.transaction():
                rival.execute(
                    "INSERT INTO medsecrets_kv (key_hash, key, value)"
                    " VALUES (sha256(convert_to('k', 'UTF8')), 'k', 'rival')"
                )

                def contender() -> None:
                    try:
                        store.batch([Expect("k", None), Put("k", b"mine")])
                    except BaseException as exc:
                        outcome.append(exc)
                    else:
                        outcome.append(None)

                thread = threading.Thread(target=contender)
                thread.start()
                # ...until the batch is blocked on the rival's row, then commits.
                with psycopg.connect(pg_dsn, autocommit=True) as watcher:
                    while thread.is_alive():
                        waiting = watcher.execute(
                            "SELECT count(*) FROM pg_locks WHERE NOT granted"
                        ).fetchone()
                        if waiting is not None and waiting[0] > 0:
                            break
            thread.join()
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConflictError)
        assert store.get("k") == b"rival"
    finally:
        store.close()


@pytest.mark.parametrize("module", ["psycopg", "psycopg_pool"])
def test_missing_driver_is_a_storage_error(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(StorageError, match=r"install medsecrets\[postgres\]"):
        PostgresStorage("host=127.0.0.1 dbname=unused")


def test_password_never_shown(pg_cluster: PostgresCluster, pg_dsn: str) -> None:
    secret = "CANARY-pw-5b2e"
    store = PostgresStorage(f"{pg_dsn} password={secret}")
    try:
        assert secret not in repr(store)
        assert "dbname=" in repr(store)
    finally:
        store.close()
    # A server that is not there: the error names the failure, not the password.
    port = pg_cluster.port
    with pytest.raises(StorageError) as info:
        PostgresStorage(f"host=127.0.0.1 port={port + 1} user=x password={secret}", timeout=2)
    assert secret not in str(info.value)
    assert info.value.__cause__ is None


def test_a_table_of_a_newer_format_is_refused(pg_dsn: str) -> None:
    PostgresStorage(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        row = admin.execute("SELECT obj_description('medsecrets_kv'::regclass, 'pg_class')")
        assert row.fetchone() == ("medsecrets format 1",)
        admin.execute("COMMENT ON TABLE medsecrets_kv IS 'medsecrets format 7'")
    with pytest.raises(StorageError, match="format 7, newer than this medsecrets reads"):
        PostgresStorage(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # as before tables were marked
        admin.execute("COMMENT ON TABLE medsecrets_kv IS NULL")
    PostgresStorage(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        row = admin.execute("SELECT obj_description('medsecrets_kv'::regclass, 'pg_class')")
        assert row.fetchone() == ("medsecrets format 1",)


def test_writes_survive_connections_the_server_ended(pg_dsn: str) -> None:
    """A connection the server ended while it sat in the pool is found out before it is
    used (it turns readable: the server's notice, then its end of the socket), so no
    write fails on it, and none is sent twice."""
    store = PostgresStorage(pg_dsn, min_size=4, max_size=4)
    try:
        with ThreadPoolExecutor(4) as pool:  # four connections in use, then idle
            list(pool.map(lambda n: store.put(f"warm-{n}", b"v"), range(16)))
        # Ended and gone (waited for): no write races the ending.
        assert _end_other_connections(pg_dsn, wait_ms=10_000) >= 2
        for n in range(8):
            store.put(f"k{n}", b"v")
            store.batch([Expect(f"k{n}", b"v"), Put(f"k{n}", b"w")])
            store.delete(f"warm-{n}")
        assert [store.get(f"k{n}") for n in range(8)] == [b"w"] * 8
        lease = store.acquire_lease("leader", "me", 30)
        assert lease is not None
        store.release_lease(lease)
    finally:
        store.close()
