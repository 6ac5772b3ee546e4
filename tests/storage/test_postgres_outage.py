"""``PostgresStorage`` when the database goes away, on a real throwaway cluster.

Each test has a cluster of its own (it is stopped or frozen). Two outages:

- stopped (``pg_ctl stop -m immediate``): connections end, new ones are refused;
- frozen (SIGSTOP on the postmaster and every backend): the kernel still accepts
  connections and acknowledges every packet, but nothing answers, so only the
  store's own deadline ends a query (before, a read waited for ever).

Either way a read and a write fail with ``StorageUnavailable`` (HTTP 503), and the
same store works again once the database is back, without a restart. "In time" is
a generous bound (a thread join), never a tight timing threshold: the store's
timeout is 1 s; a pass takes at most a few of them, a hang is caught at 30 s.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medsecrets.errors import ConfigError, StorageUnavailable
from medsecrets.server.bootstrap import open_storage
from medsecrets.server.config import load_settings
from medsecrets.storage.base import Expect, Put
from medsecrets.storage.postgres import PostgresStorage
from medsecrets.testing.pgcluster import PostgresCluster, find_pg_bin
from tests.storage.conftest import _require_pg_binaries

pytestmark = pytest.mark.postgres

TIMEOUT = 1.0
#: A call that takes longer has hung (the store's bound is a small multiple of TIMEOUT).
HANG = 30.0
#: How long a store may take to serve again once the database is back (the pool's backoff).
RECOVERY = 90.0


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own (it will be stopped or frozen)."""
    _require_pg_binaries()
    with PostgresCluster() as pg:
        yield pg


def _pg_ctl(pg: PostgresCluster, *args: str) -> None:
    """Run ``pg_ctl`` on ``pg``'s data directory as the user that owns it."""
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    owner = os.stat(pg.data_dir).st_uid
    as_owner = owner != os.geteuid()
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(pg.data_dir), "-w", *args],
        cwd=pg.socket_dir,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        user=owner if as_owner else None,
        group=os.stat(pg.data_dir).st_gid if as_owner else None,
        extra_groups=[] if as_owner else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=120,
    )


def _stop(pg: PostgresCluster) -> None:
    _pg_ctl(pg, "-m", "immediate", "stop")


def _start_again(pg: PostgresCluster) -> None:
    """Start the stopped server with the options it ran with (its ``postmaster.opts``,
    which ``pg_ctl restart`` reads): the same port, so the stores' DSNs still hold."""
    _pg_ctl(pg, "-l", str(pg.socket_dir / "server.log"), "restart")


def _outcome(call: Callable[[], object]) -> BaseException | None:
    """What ``call`` raised (``None``: it returned); fails the test if it has not
    returned within ``HANG`` seconds (the thread is left behind, a daemon)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"still waiting after {HANG:g} s: the store hangs"
    return outcome[0]


def _fails_unavailable(call: Callable[[], object]) -> StorageUnavailable:
    error = _outcome(call)
    assert isinstance(error, StorageUnavailable), repr(error)
    return error


def _serves_again(store: PostgresStorage, key: str, value: bytes) -> None:
    """The store reads ``key`` as ``value`` and writes again, within ``RECOVERY``."""
    deadline = time.monotonic() + RECOVERY
    while True:
        try:
            assert store.get(key) == value
            break
        except StorageUnavailable:
            assert time.monotonic() < deadline, "the store did not serve again"
            time.sleep(0.2)
    store.put("after", b"again")
    assert store.get("after") == b"again"


def _operations(store: PostgresStorage) -> dict[str, Callable[[], object]]:
    """A read, a list, a plain write and a checked batch (none changes ``kept``)."""
    return {
        "get": lambda: store.get("kept"),
        "list": lambda: store.list(""),
        "put": lambda: store.put("new", b"w"),
        "batch": lambda: store.batch([Expect("kept", b"v"), Put("other", b"x")]),
    }


def test_a_stopped_database_fails_operations_in_time_and_is_used_again(
    cluster: PostgresCluster,
) -> None:
    store = PostgresStorage(cluster.create_database("outage"), timeout=TIMEOUT)
    try:
        store.put("kept", b"v")
        _stop(cluster)
        for name, call in _operations(store).items():
            error = _fails_unavailable(call)
            assert "postgres" in error.message, name
        _start_again(cluster)
        _serves_again(store, "kept", b"v")
    finally:
        store.close()


def test_a_frozen_database_fails_operations_in_time_and_is_used_again(
    cluster: PostgresCluster,
) -> None:
    store = PostgresStorage(cluster.create_database("outage"), timeout=TIMEOUT)
    try:
        store.put("kept", b"v")
        with cluster.frozen():
            errors = {name: _fails_unavailable(call) for name, call in _operations(store).items()}
        # a read says nothing of an outcome; a write cut off may still commit on resume
        assert "no answer" in errors["get"].message or "no connection" in errors["get"].message
        assert "outcome" not in errors["get"].message
        assert "no connection" in errors["put"].message or "unknown" in errors["put"].message
        _serves_again(store, "kept", b"v")
    finally:
        store.close()


def test_a_query_without_an_answer_is_cut_off_and_not_tried_again(
    cluster: PostgresCluster,
) -> None:
    """The first read after the freeze has its connection (nothing to wait for in the
    pool): the store's deadline, not the pool's, ends it, and the read is not sent
    again on another of the pool's connections (each would wait the timeout again:
    nine tries with the defaults)."""
    store = PostgresStorage(
        cluster.create_database("outage"), timeout=TIMEOUT, min_size=4, max_size=4
    )
    try:
        store.put("kept", b"v")
        with cluster.frozen():
            store._pool.pop_stats()
            error = _fails_unavailable(lambda: store.get("kept"))
        assert error.message == (
            "postgres get failed: no answer from the server within 1 s, the connection was closed"
        )
        assert store._pool.get_stats().get("requests_num") == 1  # one connection taken
    finally:
        store.close()


def test_the_server_setting_bounds_the_store(cluster: PostgresCluster, tmp_path: Path) -> None:
    """``storage.timeout`` (here from its environment variable) reaches the server's
    store: a frozen database fails a read after it, not the library's default; a bad
    value is one line naming the setting."""
    dsn = cluster.create_database("outage")
    env = {"MEDSECRETS_STORAGE_TYPE": "postgres", "MEDSECRETS_STORAGE_DSN": dsn}
    with pytest.raises(ConfigError) as refused:
        load_settings(None, env={**env, "MEDSECRETS_STORAGE_TIMEOUT": "0"}, overrides={})
    assert str(refused.value) == (
        "setting 'storage.timeout' (environment MEDSECRETS_STORAGE_TIMEOUT):"
        " must be a number of seconds from 1 to 300, got '0'"
    )
    settings = load_settings(
        None,
        env={**env, "MEDSECRETS_STORAGE_TIMEOUT": "2"},
        overrides={"tls_disable": True, "data_dir": str(tmp_path)},
    )
    assert settings.storage.timeout == 2.0
    assert load_settings(None, env=env, overrides={"tls_disable": True}).storage.timeout == 5.0
    store = open_storage(settings)
    try:
        store.put("kept", b"v")
        with cluster.frozen():
            error = _fails_unavailable(lambda: store.get("kept"))
        assert "no answer from the server within 2 s" in error.message
    finally:
        store.close()
