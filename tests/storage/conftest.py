"""Storage fixtures: one throwaway PostgreSQL cluster per session, fresh tables per test.

Without PostgreSQL binaries the PostgreSQL tests skip with the reason; under
CI (``CI=true``) they fail instead, so a missing install cannot pass unseen.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("medsecrets.storage.testing")

from medsecrets.storage.sqlite import SqliteStorage  # noqa: E402
from medsecrets.testing.pgcluster import PostgresCluster, find_pg_bin  # noqa: E402
from tests.support.fsync import SlowFsync  # noqa: E402

_databases = itertools.count()


def _require_pg_binaries() -> None:
    if find_pg_bin() is not None:
        return
    reason = "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: refusing to skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the whole session (durable settings: the defaults)."""
    _require_pg_binaries()
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_cluster_fsync_off() -> Iterator[PostgresCluster]:
    """A second cluster started with ``-c fsync=off`` (stores must refuse it)."""
    _require_pg_binaries()
    with PostgresCluster(settings={"fsync": "off"}) as cluster:
        yield cluster


def new_database(cluster: PostgresCluster) -> tuple[str, str]:
    """Create a fresh, empty database; return (name, dsn)."""
    name = f"t_{os.getpid()}_{next(_databases)}"
    return name, cluster.create_database(name)


@pytest.fixture(scope="session")
def pg_shared_database(pg_cluster: PostgresCluster) -> str:
    """DSN of the database the tests share (reset before each test by ``pg_dsn``)."""
    return new_database(pg_cluster)[1]


@pytest.fixture
def pg_dsn(pg_shared_database: str) -> str:
    """DSN of an empty database: no other sessions, no medsecrets tables.

    Creating a database per test costs ~0.2 s; resetting one costs milliseconds.
    """
    import psycopg

    with psycopg.connect(pg_shared_database, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        conn.execute("DROP TABLE IF EXISTS medsecrets_kv, medsecrets_leases")
    return pg_shared_database


# -- SQLite ---------------------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A SQLite store's path (not created)."""
    return tmp_path / "store.db"


@pytest.fixture
def seam() -> SlowFsync:
    return SlowFsync()


@pytest.fixture
def seamed(path: Path, seam: SlowFsync) -> Iterator[SqliteStorage]:
    """A storage on ``path`` whose log flushes go through ``seam`` (released at the end)."""
    s = SqliteStorage(path, _fsync=seam)
    yield s
    seam.open.set()
    seam.error = None
    s.close()
