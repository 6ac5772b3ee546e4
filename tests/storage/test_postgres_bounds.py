"""``PostgresStorage``'s outage bounds at their edges: the DSN they are added to, a store
that fails to open, and ``_Deadlines`` nested, after ``close`` and across ``fork``.

The deadline tests use real connections to the session's cluster; waits are generous
multiples of the deadline (never a tight timing threshold).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from medsecrets.errors import StorageError
from medsecrets.storage.postgres import PostgresStorage, _Deadlines, _with_bounds
from medsecrets.testing.pgcluster import PostgresCluster

pytestmark = pytest.mark.postgres

PASSWORD = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=127.0.0.1 password=x {PASSWORD}",  # a password with a space, unquoted
        f"postgresql://u:{PASSWORD}%zz@127.0.0.1/db",  # a bad percent-encoding
        f"postgresql://u:{PASSWORD}@127.0.0.1/db?sslmode=require&bogus=1",
        f"host=127.0.0.1 password={PASSWORD} bogus=1",
    ],
)
def test_an_unparsable_dsn_is_one_storage_error_without_the_password(dsn: str) -> None:
    """libpq's parse errors quote the token they choke on, which may be the password:
    the store says the DSN is invalid and shows none of it (it used to raise psycopg's
    own ``ProgrammingError`` with libpq's message, password fragment included)."""
    with pytest.raises(StorageError) as refused:
        PostgresStorage(dsn, timeout=1)
    assert PASSWORD not in str(refused.value)
    assert PASSWORD not in repr(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert "not a valid" in str(refused.value)


def test_bounds_are_added_to_a_uri_and_a_socket_dsn_and_given_ones_kept() -> None:
    from psycopg.conninfo import conninfo_to_dict

    uri = conninfo_to_dict(_with_bounds("postgresql://u:p@h/db?sslmode=require", 5))
    assert uri["password"] == "p" and uri["sslmode"] == "require" and uri["host"] == "h"
    assert uri["connect_timeout"] == "5" and uri["tcp_user_timeout"] == "5000"
    given = conninfo_to_dict(_with_bounds("host=/run/pg keepalives_idle=60 connect_timeout=9", 2))
    assert given["host"] == "/run/pg"
    assert (given["keepalives_idle"], given["connect_timeout"]) == ("60", "9")
    assert given["keepalives_interval"] == "1" and given["tcp_user_timeout"] == "2000"


#: A call still running after this long has hung (the deadlines here are 1 s).
HANG = 30.0
_SWEEPER = "medsecrets-storage-deadlines"


def _sweepers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == _SWEEPER}


def test_a_store_refused_at_open_leaves_no_deadline_thread(
    pg_cluster_fsync_off: PostgresCluster,
) -> None:
    """The open's checks run under a deadline (so its thread runs); a refusal after
    them stops it (it used to be stopped only for a driver error: every refused open
    left a thread sweeping for ever)."""
    before = _sweepers()
    with pytest.raises(StorageError, match="fsync"):
        PostgresStorage(pg_cluster_fsync_off.dsn, timeout=1)
    for thread in _sweepers() - before:
        thread.join(HANG)
        assert not thread.is_alive()


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_an_operation_under_way_at_close_keeps_its_deadline(pg_dsn: str) -> None:
    """``close()`` while an operation waits on the server: the operation is still cut
    off at its deadline (the thread used to stop at once, leaving it to wait for ever
    on a server that does not answer; here a long ``pg_sleep`` stands for one)."""
    store = PostgresStorage(pg_dsn, timeout=1)
    outcome: list[BaseException | None] = []

    def slow() -> None:
        try:
            with store._connection() as conn:
                conn.execute("SELECT pg_sleep(40)")
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    _until(lambda: bool(store._deadlines._armed))
    store.close()
    thread.join(HANG)
    assert not thread.is_alive(), "the operation outlived its deadline after close()"
    assert type(outcome[0]).__name__ == "_NoAnswer"


def test_a_forked_child_never_ends_its_parents_connections(pg_dsn: str) -> None:
    """A child forked while the parent has an operation under way inherits the armed
    deadlines (with duplicates of the parent's sockets: one socket, shared); its own
    sweeps used to shut down the parent's connection at the inherited deadline. The
    child forgets them (and the lock and thread) at the fork: the parent's connection,
    done in time, is still sound after the child's sweeps."""
    limit = 2.0
    deadlines = _Deadlines(limit)
    armed, release = threading.Event(), threading.Event()
    with psycopg.connect(pg_dsn, autocommit=True) as parents:

        def operation() -> None:
            with deadlines.bound(parents):
                armed.set()
                release.wait(HANG)

        thread = threading.Thread(target=operation, daemon=True)
        thread.start()
        assert armed.wait(HANG)
        pid = os.fork()
        if pid == 0:  # the child: sweeps of its own for longer than the inherited deadline
            code = 1
            try:
                with psycopg.connect(pg_dsn, autocommit=True) as childs:
                    with deadlines.bound(childs):
                        childs.execute("SELECT 1")
                    time.sleep(limit * 2)
                code = 0
            finally:
                os._exit(code)
        release.set()  # well before the parent's own deadline
        thread.join(HANG)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert parents.execute("SELECT 1").fetchone() == (1,)
    deadlines.close()


def test_a_nested_bound_leaves_the_outer_deadline_armed(pg_dsn: str) -> None:
    """``bound`` entered again for a connection already bound (a helper that takes
    its own deadline, called inside an operation): the inner block ends without
    disarming the outer one (it used to replace and then remove it, so the rest of
    the outer operation waited without a deadline)."""
    deadlines = _Deadlines(1.0)
    outcome: list[BaseException | None] = []
    with psycopg.connect(pg_dsn, autocommit=True) as conn:

        def operation() -> None:
            try:
                with deadlines.bound(conn):
                    with deadlines.bound(conn):
                        conn.execute("SELECT 1")
                    conn.execute("SELECT pg_sleep(40)")
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)

        thread = threading.Thread(target=operation, daemon=True)
        thread.start()
        thread.join(HANG)
        assert not thread.is_alive(), "the outer operation lost its deadline"
    deadlines.close()
    assert type(outcome[0]).__name__ == "_NoAnswer"
    assert conn.closed
