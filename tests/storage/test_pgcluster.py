"""PostgresCluster: the throwaway server the PostgreSQL tests run against."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from medsecrets.testing import pgcluster
from medsecrets.testing.pgcluster import ClusterError, PostgresCluster, find_pg_bin

from .conftest import _require_pg_binaries

pytestmark = pytest.mark.postgres


def test_find_pg_bin_none_without_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgcluster, "_DEBIAN_GLOB", str(tmp_path / "nothing" / "*" / "bin"))
    assert find_pg_bin() is None
    with pytest.raises(ClusterError, match="not found"):
        PostgresCluster().start()


def test_find_pg_bin_has_the_server_binaries() -> None:
    _require_pg_binaries()
    found = find_pg_bin()
    assert found is not None
    for name in ("initdb", "pg_ctl", "postgres"):
        assert os.access(found / name, os.X_OK)


def test_session_cluster_is_local_utf8_and_durable(pg_cluster: PostgresCluster) -> None:
    assert pg_cluster.running
    assert "host=127.0.0.1" in pg_cluster.dsn
    with psycopg.connect(pg_cluster.dsn) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("listen_addresses", "server_encoding", "lc_collate", "fsync")
        }
        sockets = conn.execute("SHOW unix_socket_directories").fetchone()
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "server_encoding": "UTF8",
        "lc_collate": "C",
        "fsync": "on",
    }
    assert sockets == (str(pg_cluster.socket_dir),)
    mode = stat.S_IMODE(pg_cluster.data_dir.stat().st_mode)
    assert mode & 0o077 == 0


def test_databases_are_created_and_dropped(pg_cluster: PostgresCluster) -> None:
    dsn = pg_cluster.create_database("made_here")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("made_here",)
    pg_cluster.drop_database("made_here")
    pg_cluster.drop_database("made_here")
    with pytest.raises(ValueError):
        pg_cluster.create_database('bad"name')


@pytest.mark.slow
def test_lifecycle_removes_everything() -> None:
    _require_pg_binaries()
    with PostgresCluster(settings={"work_mem": "8MB"}) as cluster:
        root = cluster.socket_dir
        with psycopg.connect(cluster.dsn) as conn:
            assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)
        assert root.exists()
    assert not root.exists()
    assert not cluster.running
    cluster.stop()  # idempotent
    with pytest.raises(ClusterError):
        _ = cluster.dsn
