"""``PostgresStorage``: the backend for several server nodes, on PostgreSQL.

Built on psycopg 3 and ``psycopg_pool.ConnectionPool`` (the optional extra
``medsecrets[postgres]``; imported only when a store is opened, and a missing
driver raises ``StorageError("install medsecrets[postgres]")``).

On open the store refuses (``StorageError`` naming the setting) a server that
could lose committed writes: ``fsync`` or ``full_page_writes`` off, or
``synchronous_commit`` ``off``/``local``; and a database whose encoding is not
UTF8. It then creates its two tables if missing, inside a transaction holding
an advisory lock, so several processes may start at once.

Keys are ``TEXT COLLATE "C"`` (byte order of UTF-8 = code point order);
values are ``BYTEA``. Plain writes are single autocommit statements, durable
when they return. A batch runs in one READ COMMITTED transaction, its rows taken in
key-hash order (for each key its ``Expect`` conditions, then its net write): a
row expected to hold a value is read ``FOR UPDATE`` (``FOR SHARE`` when every
``Expect`` of it is shared and the batch does not write it: a read check, such as
the keyring check of every encrypting write, so batches that only check a row do
not wait for each other), a key expected absent is claimed by inserting it
(``_batch_statements``), so a concurrent writer of an expected (even absent) key
waits, and then the condition sees what it wrote.
Row locks are not fair: a new ``FOR SHARE`` joins those held without queuing behind
a writer that waits for them, so under read checks that keep overlapping (the
encrypting writes of several nodes) a change of the row (a keyring rotation) waited
until the storage timeout. So before its rows a batch takes, for each key it expects
a value of, a transaction advisory lock (``_key_locks``) in the same mode, shared for
a read check: heavyweight locks queue, a new request that conflicts with a waiting
one waits behind it, so a change waits only for the checks in flight. The row locks
still decide what a condition sees (the advisory lock orders, it guards nothing: a
node of older code, which takes none, is kept out as before, only not queued).
Advisory locks take slots of a lock table the whole server shares, so a batch takes at
most ``_MAX_KEY_LOCKS``: one expecting more keys keeps only its exclusive locks (the keys
it changes, still queued fairly, a keyring change in a large rewrap batch too) and
drops the shared ones, and one changing more than that many expected keys takes none.
It used to run ``SERIALIZABLE`` when it expected a key absent, whose checks
lock index pages, not keys: about a quarter of the batches creating distinct
keys at once failed. A batch PostgreSQL aborts to break a deadlock (a rival
that takes rows in another order) or a serialization cycle (it rolled back
whole: nothing was written) is run again, up to ``_BATCH_TRIES`` times. Only
a failed ``Expect`` is a ``ConflictError`` (as is a batch with conditions that
lost every try; one without gets ``StorageError``). Leases are one atomic upsert
(``INSERT … ON CONFLICT DO UPDATE … WHERE expires_at <= now RETURNING``).

**A database that goes away** fails the operation within the store's ``timeout``
(the server's ``storage.timeout``) instead of holding it. Three bounds, each for
one way of going away:

- no connection: an operation waits at most ``timeout`` for a pooled connection
  (``PoolTimeout``), and a new connection at most ``timeout`` to be made
  (libpq's ``connect_timeout``, at least 2 s);
- a peer that drops packets (a network partition, a frozen host): libpq's TCP
  keepalives and ``tcp_user_timeout`` make the kernel end the connection, so an
  idle pooled connection is found dead before a write is sent on it, and
  unacknowledged data is given up after ``timeout``;
- a server that keeps the connection but never answers (a hung or stopped
  process: its kernel still acknowledges every packet, so TCP sees nothing):
  ``_Deadlines`` shuts down the socket of an operation still waiting for its
  answer ``timeout`` (up to ``1.25 * timeout``: a sweep every quarter of it) after
  it took its connection; libpq then sees the
  connection end, psycopg raises, and the connection is closed (never reused).

The last bound is ours because nothing lower gives it: libpq's socket is
non-blocking and waited on with ``poll`` (``SO_RCVTIMEO`` never applies),
server-side ``statement_timeout`` needs a server that runs, a cancel request
needs one that answers, and ``Connection.wait``'s ``timeout`` exists only from
psycopg 3.3 (we support 3.2) and raises a private exception. A ``shutdown`` of
the socket, from a thread of the store's, touches no libpq state (only the
kernel's socket, through a duplicate descriptor held until the operation ends,
so the number cannot have been reused). A read that found no answer is not
tried again (it would wait again); every such failure, and a lost or missing
connection, is ``StorageUnavailable`` (HTTP 503), a write's saying that its
outcome is unknown: a frozen server that resumes may still commit it. Libpq
connection parameters given in the DSN (``keepalives_idle=…``) win over those
derived from ``timeout``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import secrets
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import (
    ConflictError,
    LeaseLostError,
    MedsecretsError,
    StorageError,
    StorageUnavailable,
)
from medsecrets.storage.base import Delete, Expect, Lease, ListPage, Operation, Put
from medsecrets.storage.validation import (
    check_holder,
    check_limit,
    check_ops,
    check_prefix,
    check_storage_key,
    check_ttl,
    check_value,
    prefix_upper_bound,
)

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow
    from psycopg_pool import ConnectionPool

__all__ = ["PostgresStorage"]

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

# Table names are literals in every statement below (no SQL is built from input).
_KV = "medsecrets_kv"
_LEASES = "medsecrets_leases"
#: The layout this code reads and writes, kept as the kv table's comment.
_FORMAT = 1
_FORMAT_MARK = "medsecrets format "
#: Advisory lock key serialising schema creation (arbitrary, fixed).
_SCHEMA_LOCK = 0x6D65_6473_6563_0001
#: First half of the two-``int4`` advisory lock of an expected key (``_key_locks``):
#: a space of its own, apart from ``_SCHEMA_LOCK``'s (one ``bigint``) and other classes.
_KEY_LOCK_CLASS = 0x6D65_6B76
#: The most advisory locks a batch takes (``_key_locks``): each takes a slot of the lock
#: table the whole server shares (``max_locks_per_transaction`` per connection, 64 by
#: default), where row locks take none. Above it a batch drops its shared ones first,
#: then all of them.
_MAX_KEY_LOCKS = 32

#: Keys may be longer than a btree entry allows (2704 bytes), so rows are found
#: by the SHA-256 of the UTF-8 key, and ordered through an index on the key's
#: first 512 characters (at most 2048 bytes). Truncation ``t`` keeps
#: order: ``a <= b`` implies ``t(a) <= t(b)``, so ``ORDER BY t(key), key`` is
#: ``ORDER BY key`` and ``t(key) >= t(bound)`` is a safe index condition.
_SCHEMA: tuple[tuple[str, str], ...] = (
    (
        "medsecrets_kv",
        "CREATE TABLE IF NOT EXISTS medsecrets_kv ("
        ' key_hash BYTEA PRIMARY KEY, key TEXT COLLATE "C" NOT NULL, value BYTEA NOT NULL)',
    ),
    (
        "medsecrets_kv_order",
        "CREATE INDEX IF NOT EXISTS medsecrets_kv_order ON medsecrets_kv ((substr(key, 1, 512)))",
    ),
    (
        "medsecrets_leases",
        "CREATE TABLE IF NOT EXISTS medsecrets_leases ("
        ' name_hash BYTEA PRIMARY KEY, name TEXT COLLATE "C" NOT NULL, holder TEXT NOT NULL,'
        " token TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)",
    ),
)
"""(relation, statement creating it): each run at open only when the relation is
missing, so a role granted only the rows of tables a DBA made can open the store
(``CREATE … IF NOT EXISTS`` needs the right to create in the schema even then)."""


def _condition_body(lock: Literal["FOR UPDATE", "FOR SHARE"]) -> str:
    """A batch's ``Expect``, checked inside its transaction: the row is locked in mode
    ``lock``, and a mismatch aborts the transaction with serialization_failure (a
    ``ConflictError``)."""
    return (
        " DECLARE cur BYTEA; BEGIN"  # noqa: S608 (lock is one of two literals)
        f" SELECT value INTO cur FROM medsecrets_kv WHERE key_hash = h {lock};"
        " IF cur IS DISTINCT FROM v THEN"
        " RAISE EXCEPTION 'medsecrets: batch expectation failed' USING ERRCODE = '40001';"
        " END IF; END "
    )


#: The read check's function, which a store made by older code lacks: a role that may not
#: create it checks shared ``Expect``s with ``medsecrets_expect`` instead (the same outcome).
_CHECK_FUNCTION = "medsecrets_check"
#: (function, body) of each condition a batch checks: ``medsecrets_expect`` locks the
#: row for a write (a precondition), ``medsecrets_check`` shares it (a read check:
#: other checks go on, a writer of the row waits). Each made at open only when it is
#: missing or has another body (replacing a function needs its ownership); the
#: first's body is unchanged since it was made, so stores of older code keep it.
_CONDITIONS: tuple[tuple[str, str], ...] = (
    ("medsecrets_expect", _condition_body("FOR UPDATE")),
    (_CHECK_FUNCTION, _condition_body("FOR SHARE")),
)
_CONDITION_SOURCE = (
    "SELECT prosrc FROM pg_catalog.pg_proc WHERE oid = to_regprocedure(%s || '(bytea, bytea)')"
)
_KEY_COLLATION = (
    "SELECT collation_name FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s"
)

_GET = "SELECT value FROM medsecrets_kv WHERE key_hash = %s"
_PUT = (
    "INSERT INTO medsecrets_kv (key_hash, key, value) VALUES (%s, %s, %s)"
    " ON CONFLICT (key_hash) DO UPDATE SET value = EXCLUDED.value"
)
_DELETE = "DELETE FROM medsecrets_kv WHERE key_hash = %s"
_LIST_WHERE = (
    "SELECT key FROM medsecrets_kv"
    ' WHERE substr(key, 1, 512) >= substr(%(prefix)s, 1, 512) COLLATE "C"'
    ' AND substr(key, 1, 512) >= substr(%(after)s, 1, 512) COLLATE "C"'
    ' AND key >= %(prefix)s COLLATE "C" AND key > %(after)s COLLATE "C"'
)
_LIST_BOUNDED = (
    _LIST_WHERE + ' AND substr(key, 1, 512) <= substr(%(upper)s, 1, 512) COLLATE "C"'
    ' AND key < %(upper)s COLLATE "C" ORDER BY substr(key, 1, 512), key LIMIT %(limit)s'
)
_LIST_UNBOUNDED = _LIST_WHERE + " ORDER BY substr(key, 1, 512), key LIMIT %(limit)s"
_EXPECT = "SELECT medsecrets_expect(%s, %s)"
#: The advisory lock of an expected key, for a write or a read check (``_key_locks``).
_KEY_LOCK = "SELECT pg_advisory_xact_lock(%s::int4, %s::int4)"
_KEY_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared(%s::int4, %s::int4)"
#: A shared ``Expect`` (a read check) of a key the batch does not write.
_CHECK = "SELECT medsecrets_check(%s, %s)"
#: An ``Expect`` of absence: fails (unique_violation, a ``ConflictError``) if the key exists.
_CLAIM = "INSERT INTO medsecrets_kv (key_hash, key, value) VALUES (%s, %s, '')"
_LEASE_ACQUIRE = (
    "INSERT INTO medsecrets_leases AS l (name_hash, name, holder, token, expires_at)"
    " VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (name_hash) DO UPDATE SET holder = EXCLUDED.holder, token = EXCLUDED.token,"
    " expires_at = EXCLUDED.expires_at WHERE l.expires_at <= %s RETURNING l.token"
)
_LEASE_RENEW = (
    "UPDATE medsecrets_leases SET expires_at = %s"
    " WHERE name_hash = %s AND token = %s AND expires_at > %s RETURNING name"
)
_LEASE_RELEASE = "DELETE FROM medsecrets_leases WHERE name_hash = %s AND token = %s"

#: serialization_failure, deadlock_detected, unique_violation.
_CONFLICT_STATES = frozenset({"40001", "40P01", "23505"})
#: Operations that write nothing (their failure has no outcome to tell).
_READS = frozenset({"open", "get", "list"})
#: admin_shutdown, crash_shutdown, cannot_connect_now: the server ended the connection.
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})
#: Aborts that roll a transaction back whole whatever it did: a batch is run again.
_RETRY_STATES = frozenset({"40001", "40P01"})
#: What ``medsecrets_expect`` raises (with SQLSTATE 40001) for a condition that fails.
_EXPECT_FAILED = "medsecrets: batch expectation failed"
#: Runs of a batch that PostgreSQL keeps aborting (``_RETRY_STATES``) before it fails.
_BATCH_TRIES = 10
#: Upper bound in seconds of the random pause before a batch's ``n``-th run, times ``n``.
_RETRY_PAUSE = 0.002
_UNSAFE_SETTINGS: tuple[tuple[str, frozenset[str]], ...] = (
    ("fsync", frozenset({"off"})),
    ("full_page_writes", frozenset({"off"})),
    ("synchronous_commit", frozenset({"off", "local"})),
)


def _digest(key: str) -> bytes:
    """The row id of ``key``: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def _aborted_by_server(exc: Exception) -> bool:
    """Whether ``exc`` is PostgreSQL aborting a transaction to break a deadlock or a
    serialization cycle (rolled back whole: running it again is safe), not a failed
    ``Expect`` (which raises the same serialization_failure, with its own message)."""
    if getattr(exc, "sqlstate", None) not in _RETRY_STATES:
        return False
    diag = getattr(exc, "diag", None)
    return getattr(diag, "message_primary", None) != _EXPECT_FAILED


_Statement = tuple[str, tuple[object, ...]]


def _key_locks(digests: dict[bytes, bool]) -> list[_Statement]:
    """The advisory locks taken first by a batch expecting the values of the keys of
    ``digests`` (a key hash each: whether the batch only checks it, a read check).

    One transaction lock per key (class ``_KEY_LOCK_CLASS``, the hash's first four bytes
    as a signed ``int4``), shared for a read check, exclusive else, in lock order: every
    batch takes them in the same order and before any row, so they add no deadlock.
    PostgreSQL queues heavyweight locks: a check that comes while a change of the key waits for the
    checks in flight waits behind it (it joined their ``FOR SHARE`` at once, and the
    change could wait for ever). Keys that share a lock (one pair in 2**32) only make
    their batches wait for each other; a lock two keys of one batch share is taken once,
    in the stronger mode. A write of a key the batch does not expect takes none: blind
    writes (a batch of thousands of ``Put``) would fill the server's lock table, and
    nothing depends on one getting in under read checks; every change of the keyring
    expects its value. For the same reason a batch takes at most ``_MAX_KEY_LOCKS`` of
    them (thousands of ``Expect``, a secret's versions rewrapped, failed with "out of
    shared memory"): with more, it keeps only its exclusive ones, those of the keys it
    changes (a keyring change inside a large rewrap: read checks that keep overlapping
    would keep it out until the storage timeout), and drops its shared ones (a read check
    that is not queued holds a waiting change of its key back only until its own batch
    ends: one batch cannot keep the change out); if even its exclusive ones are more than
    ``_MAX_KEY_LOCKS`` it takes none. The locks kept are taken in the same lock order,
    before any row, so no deadlock is added. A key whose lock is dropped is still guarded
    by its row lock, which decides what the batch sees: it is only not queued fairly.
    """
    locks: dict[int, bool] = {}
    for digest, checked in digests.items():
        number = int.from_bytes(digest[:4], "big", signed=True)
        locks[number] = locks.get(number, True) and checked
    if len(locks) > _MAX_KEY_LOCKS:
        locks = {number: checked for number, checked in locks.items() if not checked}
        if len(locks) > _MAX_KEY_LOCKS:
            return []
    return [
        (_KEY_LOCK_SHARED if checked else _KEY_LOCK, (_KEY_LOCK_CLASS, number))
        for number, checked in sorted(locks.items())
    ]


def _batch_statements(ops: Sequence[Operation], *, shared: bool = True) -> list[_Statement]:
    """The statements of a batch's transaction: the advisory locks of the keys it expects
    a value of (``_key_locks``), then key by key in key-hash order (two
    batches take their rows in the same order: no deadlock between them). For each
    key: its ``Expect`` conditions on a value (``medsecrets_expect``: the row locked
    ``FOR UPDATE``; ``medsecrets_check``, ``FOR SHARE``, when every condition on the
    key is shared and the batch neither writes it nor expects it absent: two batches
    upgrading their shared locks to write the row would deadlock); if it expects the
    key absent, a claim (a plain ``INSERT`` of an
    empty value: it waits for a rival's uncommitted insert, fails with
    unique_violation if the key exists, and else holds the new row against every
    rival); then its net write (the last ``Put`` or ``Delete`` of it wins), or the
    claim's removal. Same outcome as checking every condition, then ``ops`` in order.
    Not ``shared`` (no ``medsecrets_check`` in the database): every condition on a value
    is a ``medsecrets_expect`` (its advisory lock still shared for a read check: such
    checks then queue on the row, and a change behind them all the same).
    """
    values: dict[str, list[bytes]] = {}
    absent: set[str] = set()
    exclusive: set[str] = set()
    written: dict[str, bytes | None] = {}
    for op in ops:
        if isinstance(op, Expect):
            if op.value is None:
                absent.add(op.key)
            else:
                values.setdefault(op.key, []).append(op.value)
                if not op.shared:
                    exclusive.add(op.key)
        elif isinstance(op, Put):
            written[op.key] = op.value
        elif isinstance(op, Delete):
            written[op.key] = None
    checked = {key: not (key in exclusive or key in written or key in absent) for key in values}
    statements = _key_locks({_digest(key): only for key, only in checked.items()})
    for digest, key in sorted((_digest(k), k) for k in {*values, *absent, *written}):
        for_write = not (shared and checked.get(key, False))
        check = _EXPECT if for_write else _CHECK
        statements.extend((check, (digest, value)) for value in values.get(key, ()))
        if key in absent:
            statements.append((_CLAIM, (digest, key)))
        if key in written:
            value = written[key]
            if value is None:
                statements.append((_DELETE, (digest,)))
            else:
                statements.append((_PUT, (digest, key, value)))
        elif key in absent:
            statements.append((_DELETE, (digest,)))
    return statements


def _wrap(op: str, exc: Exception, *, conflicts: bool = True) -> MedsecretsError:
    """``ConflictError`` for lost races (unless not ``conflicts``: an operation without a
    condition cannot conflict), else ``StorageError``; error class and SQLSTATE only,
    and for a write what is known of its outcome: none without a pooled connection in
    time, unknown once the connection was lost, or gave no answer in time, while it ran."""
    from psycopg import OperationalError
    from psycopg_pool import PoolTimeout

    if isinstance(exc, _NoAnswer):
        waited = f"no answer from the server within {exc.limit:g} s, the connection was closed"
        if op in _READS:
            return StorageUnavailable(f"postgres {op} failed: {waited}")
        return StorageUnavailable(f"postgres {op} failed: {waited}, so its outcome is unknown")
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _CONFLICT_STATES:
        if conflicts:
            return ConflictError(f"postgres {op} lost a race (SQLSTATE {sqlstate})")
        return StorageError(f"postgres {op} kept losing races (SQLSTATE {sqlstate})")
    detail = type(exc).__name__ + (f", SQLSTATE {sqlstate}" if sqlstate else "")
    if isinstance(exc, PoolTimeout):
        return StorageUnavailable(
            f"postgres {op} failed: no connection in time, nothing was sent ({detail})"
        )
    if isinstance(exc, OperationalError) and _connection_lost(sqlstate):
        if op in _READS:
            return StorageUnavailable(f"postgres {op} failed: the connection was lost ({detail})")
        return StorageUnavailable(
            f"postgres {op} failed: the connection was lost while it ran, so its outcome"
            f" is unknown ({detail})"
        )
    return StorageError(f"postgres {op} failed ({detail})")


def _connection_lost(sqlstate: str | None) -> bool:
    """Whether an ``OperationalError`` of ``sqlstate`` ended the connection (none: the
    socket broke; class 08: connection exception; 57P01-57P03: the server shut it down),
    rather than cancelling the statement (57014: rolled back, nothing written)."""
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SHUTDOWN_STATES


class _NoAnswer(Exception):
    """An operation's connection was shut down because the server did not answer within
    ``limit`` seconds (``_Deadlines``)."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"no answer within {limit:g} s")
        self.limit = limit


class _Armed:
    """One operation's deadline: a duplicate of its connection's socket, to shut down."""

    __slots__ = ("deadline", "fired", "sock")

    def __init__(self, deadline: float, sock: socket.socket) -> None:
        self.deadline = deadline
        self.sock = sock
        self.fired = False


class _Deadlines:
    """Ends the connection of an operation that waits on the server past ``limit`` seconds.

    ``bound(conn)`` arms a deadline for the block's use of ``conn``; one daemon
    thread (started at the first use; after ``close`` it stops once no operation is
    armed; a forked child forgets the parent's armed operations, whose sockets it
    shares, and starts its own at its first use) sweeps every
    ``limit / 4`` seconds and shuts down (``SHUT_RDWR``) the socket of each operation
    still under way past its deadline, so an operation is cut between ``limit`` and
    ``1.25 * limit`` after it began. Sweeping, rather than sleeping until the soonest
    deadline, leaves the operations alone: waking the thread for each one that armed an
    empty set cost a PostgreSQL read ~50 µs here (345 against 290 µs a ``get``). The
    block's exception is then ``_NoAnswer`` (whatever psycopg raised for the ended
    connection), and ``conn`` is closed as the block ends
    (an operation that completed just as its deadline passed keeps its result; its
    connection is closed all the same). Why a socket shutdown: see the module docstring.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._period = limit / 4
        self._changed = threading.Condition()
        self._armed: dict[int, _Armed] = {}
        self._thread: threading.Thread | None = None
        #: Whether ``_thread`` sweeps (set under the lock, cleared by it as it stops).
        self._sweeping = False
        self._closed = False
        _LIVE.add(self)

    @contextlib.contextmanager
    def bound(self, conn: Connection[TupleRow]) -> Iterator[None]:
        """Run the block with ``conn``'s answers due within ``limit`` seconds; nested in a
        ``bound`` of the same ``conn``, within the outer block's (earlier) deadline."""
        if id(conn) in self._armed:  # only this thread, which uses conn, arms it
            yield
            return
        try:
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        except (self._driver_errors(), OSError):  # no socket: the operation fails by itself
            yield
            return
        armed = _Armed(time.monotonic() + self.limit, sock)
        with self._changed:  # no notify: the thread's sweeps find it
            self._armed[id(conn)] = armed
            self._ensure_thread()
        try:
            yield
        except Exception:
            if armed.fired:
                raise _NoAnswer(self.limit) from None
            raise
        finally:
            with self._changed:
                self._armed.pop(id(conn), None)  # gone if forked meanwhile
            sock.close()  # the duplicate: the connection keeps its own descriptor
            if armed.fired:
                conn.close()

    def expired(self, conn: Connection[TupleRow]) -> bool:
        """Whether ``conn``'s operation (under way) was cut off at its deadline."""
        with self._changed:
            armed = self._armed.get(id(conn))
            return armed is not None and armed.fired

    def close(self) -> None:
        """Stop the thread once no operation is under way: those still under way keep
        their deadlines (and one armed after ``close`` gets a thread again)."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    @staticmethod
    def _driver_errors() -> type[Exception]:
        from psycopg import OperationalError

        return OperationalError

    def _forget_parent(self) -> None:
        """In a forked child: drop the parent's armed operations (their sockets, shared
        with the parent, must not be shut down from here), lock and thread."""
        for armed in self._armed.values():
            armed.sock.close()  # this process's duplicate only
        self._armed = {}
        self._changed = threading.Condition()
        self._thread = None
        self._sweeping = False

    def _ensure_thread(self) -> None:
        """Start the thread unless it sweeps (called holding the lock, an operation armed)."""
        if not self._sweeping or self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(  # none yet, stopping or stopped, or forked
                target=self._run, name="medsecrets-storage-deadlines", daemon=True
            )
            self._sweeping = True
            self._thread.start()

    def _run(self) -> None:
        with self._changed:
            while not self._closed or self._armed:
                now = time.monotonic()
                for armed in self._armed.values():
                    if not armed.fired and armed.deadline <= now:
                        armed.fired = True
                        with contextlib.suppress(OSError):
                            armed.sock.shutdown(socket.SHUT_RDWR)
                self._changed.wait(self._period)
            if self._thread is threading.current_thread():
                self._sweeping = False


_LIVE: weakref.WeakSet[_Deadlines] = weakref.WeakSet()
"""Every ``_Deadlines`` of this process, for ``_forget_parents``."""


def _forget_parents() -> None:
    for deadlines in list(_LIVE):
        deadlines._forget_parent()


os.register_at_fork(after_in_child=_forget_parents)


def _with_bounds(dsn: str, timeout: float) -> str:
    """``dsn`` with the libpq parameters derived from ``timeout`` it does not set itself:
    ``connect_timeout`` (whole seconds, at least 2, as psycopg enforces), TCP keepalives
    (the first probe after ``timeout`` idle, then every third of it, 3 unanswered end
    the connection) and ``tcp_user_timeout`` (milliseconds). Unix-socket connections
    ignore the TCP ones."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    seconds = max(1, math.ceil(timeout))
    derived = {
        "connect_timeout": max(2, seconds),
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": max(1, math.ceil(timeout / 3)),
        "keepalives_count": 3,
        "tcp_user_timeout": max(1000, math.ceil(timeout * 1000)),
    }
    given = conninfo_to_dict(dsn)
    return make_conninfo(dsn, **{name: v for name, v in derived.items() if name not in given})


class _ExpectedPipelineAbort(logging.Filter):
    """Drops psycopg's warning for a pipeline aborted by a failed ``Expect``.

    A failed check aborts the batch's pipeline on purpose (and the caller gets
    a ``ConflictError``); psycopg still logs "error ignored terminating ...
    pipeline aborted" at WARNING, which would make every lost race look like a
    fault in the server's log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("error ignored terminating") and "pipeline aborted" in message
        )


def _load_driver() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise StorageError("install medsecrets[postgres]") from None


class PostgresStorage:
    """A ``StorageBackend`` on a PostgreSQL database (see the module docstring).

    ``dsn`` is a libpq connection string or URI (never shown in reprs or
    errors: it may hold a password). ``min_size``/``max_size`` bound the
    connection pool; ``timeout`` (seconds, > 0) is how long an operation waits for
    a pooled connection, a connection to be made (the first one on open too), and
    the server's answer once it has its connection (see the module docstring);
    ``clock`` supplies the wall time for leases
    (``expires_at = clock.now().timestamp() + ttl``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
            raise ValueError("timeout must be a positive number of seconds")
        _load_driver()
        import psycopg
        from psycopg_pool import ConnectionPool

        self._clock: Clock = clock if clock is not None else SystemClock()
        self._errors: tuple[type[Exception], ...] = (psycopg.Error, _NoAnswer)
        self._lost: type[Exception] = psycopg.OperationalError
        psycopg_logger = logging.getLogger("psycopg")
        if not any(isinstance(f, _ExpectedPipelineAbort) for f in psycopg_logger.filters):
            psycopg_logger.addFilter(_ExpectedPipelineAbort())
        self._idle = psycopg.pq.TransactionStatus.IDLE
        self._closed = False
        self._where = _describe(dsn)
        try:
            conninfo = _with_bounds(dsn, timeout)
        except psycopg.Error:
            # libpq's message quotes the token it chokes on, which may be the password
            raise StorageError(
                "the postgres DSN is not a valid libpq connection string or URI"
                " (libpq's message is not shown: it may quote the password)"
            ) from None
        self._deadlines = _Deadlines(timeout)
        try:
            self._shared_checks = _prepare(conninfo, self._deadlines)
        except BaseException:  # a refusal too: its deadline thread ran
            self._deadlines.close()
            raise
        self._pool: ConnectionPool[Connection[TupleRow]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            # No server-side prepared statements: psycopg loses track of them when
            # a pipeline aborts (a failed Expect), and the saving here is small.
            kwargs={"autocommit": True, "prepare_threshold": None},
            timeout=timeout,
            open=False,
            name="medsecrets-storage",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            self._pool.close()
            self._deadlines.close()
            raise _wrap("open", exc) from None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"PostgresStorage({self._where}, {state})"

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("storage is closed")

    # -- key/value -----------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection[TupleRow]]:
        """A pooled connection that the server has not ended while it sat in the pool.

        A server that restarts, or ends a backend, first sends its notice and then
        closes its end, so an idle connection it ended is readable before any query
        is sent: such a connection is closed (the pool replaces it) and the next one
        taken, at most the pool's size of them. The check costs one ``poll`` and no
        round trip, and it keeps a write from being sent on a dead connection (where
        it would fail, and could not be tried again: its outcome would be unknown).
        The block's answers are due within the store's timeout (``_Deadlines``).
        """
        for _ in range(self._pool.max_size):
            with self._pool.connection() as conn:
                if not _ended_by_server(conn):
                    with self._deadlines.bound(conn):
                        yield conn
                    return
                conn.close()
        with self._pool.connection() as conn, self._deadlines.bound(conn):
            yield conn  # a pool of fresh connections by now

    def _read(self, op: str, run: Callable[[Connection[TupleRow]], _T]) -> _T:
        """``run(connection)`` for a read; tried again on another connection while the
        one taken turns out dead (ended between ``_connection``'s check and the query:
        at most the pool's size plus one tries), but not once the server gave no answer
        in time (it would be waited for again). A write is not tried again: whether it
        committed is unknown."""
        tries = self._pool.max_size + 1
        for attempt in range(1, tries + 1):
            try:
                with self._connection() as conn:
                    try:
                        return run(conn)
                    except self._lost:
                        if attempt == tries or not conn.broken or self._deadlines.expired(conn):
                            raise
                # the pool discards a broken connection: try the next one
            except self._errors as exc:
                raise _wrap(op, exc) from None
        raise AssertionError("unreachable")

    def get(self, key: str) -> bytes | None:
        """The value at ``key`` or ``None``."""
        check_storage_key(key)
        self._check_open()
        row = self._read("get", lambda conn: conn.execute(_GET, (_digest(key),)).fetchone())
        return None if row is None else bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        """Durably store ``value`` at ``key`` (one synchronous commit)."""
        check_storage_key(key)
        check_value(value)
        self._check_open()
        try:
            with self._connection() as conn:
                conn.execute(_PUT, (_digest(key), key, value))
        except self._errors as exc:
            raise _wrap("put", exc) from None

    def delete(self, key: str) -> None:
        """Durably remove ``key`` (no error when absent)."""
        check_storage_key(key)
        self._check_open()
        try:
            with self._connection() as conn:
                conn.execute(_DELETE, (_digest(key),))
        except self._errors as exc:
            raise _wrap("delete", exc) from None

    def list(self, prefix: str = "", *, after: str = "", limit: int = 1000) -> ListPage:
        """Keys starting with ``prefix`` sorting after ``after``, code point order."""
        check_prefix(prefix)
        check_prefix(after, "list after")
        check_limit(limit)
        self._check_open()
        upper = prefix_upper_bound(prefix)
        params = {"prefix": prefix, "after": after, "upper": upper, "limit": limit + 1}
        query = _LIST_UNBOUNDED if upper is None else _LIST_BOUNDED
        rows = self._read("list", lambda conn: conn.execute(query, params).fetchall())
        keys = tuple(str(row[0]) for row in rows)
        if len(keys) > limit:
            return ListPage(keys=keys[:limit], next_after=keys[limit - 1])
        return ListPage(keys=keys, next_after=None)

    def batch(self, ops: Sequence[Operation]) -> None:
        """Check every ``Expect``, then apply ``Put``/``Delete`` in order, atomically; run
        again when PostgreSQL aborted it for a deadlock or serialization cycle (module)."""
        check_ops(ops)
        self._check_open()
        if not ops:
            return
        statements = _batch_statements(ops, shared=self._shared_checks)
        conditional = any(isinstance(op, Expect) for op in ops)
        for attempt in range(1, _BATCH_TRIES + 1):
            try:
                with self._connection() as conn:
                    try:
                        self._run_batch(conn, statements)
                    finally:
                        if conn.info.transaction_status != self._idle:
                            conn.execute("ROLLBACK")
                return
            except self._errors as exc:
                if attempt == _BATCH_TRIES or not _aborted_by_server(exc):
                    raise _wrap("batch", exc, conflicts=conditional) from None
            # desynchronise the batches that aborted each other
            time.sleep(random.uniform(0, _RETRY_PAUSE * attempt))  # noqa: S311

    @staticmethod
    def _run_batch(conn: Connection[TupleRow], statements: Sequence[_Statement]) -> None:
        """The whole transaction (``_batch_statements``) in one pipelined round trip, at
        the default isolation, READ COMMITTED (the caller rolls back whatever is left
        open). A failed condition aborts it all."""
        with conn.pipeline():
            conn.execute("BEGIN")
            for query, params in statements:
                conn.execute(query, params)
            conn.execute("COMMIT")

    # -- leases --------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take ``name`` for ``ttl`` seconds if free or expired, else ``None`` (atomic)."""
        check_storage_key(name)
        check_holder(holder)
        ttl = check_ttl(ttl)
        self._check_open()
        now = self._clock.now().timestamp()
        token = secrets.token_hex(16)
        try:
            with self._connection() as conn:
                row = conn.execute(
                    _LEASE_ACQUIRE, (_digest(name), name, holder, token, now + ttl, now)
                ).fetchone()
        except self._errors as exc:
            raise _wrap("acquire_lease", exc) from None
        if row is None:
            return None
        return Lease(name=name, holder=holder, token=token, expires_at=now + ttl)

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend ``lease`` to ``now + ttl``; ``LeaseLostError`` if expired or taken."""
        ttl = check_ttl(ttl)
        self._check_open()
        now = self._clock.now().timestamp()
        try:
            with self._connection() as conn:
                row = conn.execute(
                    _LEASE_RENEW, (now + ttl, _digest(lease.name), lease.token, now)
                ).fetchone()
        except self._errors as exc:
            raise _wrap("renew_lease", exc) from None
        if row is None:
            raise LeaseLostError(f"lease {lease.name!r} is no longer held")
        return Lease(name=lease.name, holder=lease.holder, token=lease.token, expires_at=now + ttl)

    def release_lease(self, lease: Lease) -> None:
        """Free ``lease`` if this token still holds it (no error otherwise)."""
        self._check_open()
        try:
            with self._connection() as conn:
                conn.execute(_LEASE_RELEASE, (_digest(lease.name), lease.token))
        except self._errors as exc:
            raise _wrap("release_lease", exc) from None

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Close the pool and its connections (one in use is closed as it is returned:
        its operation keeps its deadline). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        self._deadlines.close()


def _prepare(conninfo: str, deadlines: _Deadlines) -> bool:
    """On one connection of its own, under ``deadlines``: refuse an unsafe server
    (``_check_settings``), make or check the tables (``_ensure_schema``, whose answer is
    returned); every failure a ``StorageError`` that shows no part of ``conninfo``."""
    import psycopg

    try:
        with psycopg.connect(conninfo, autocommit=True) as conn, deadlines.bound(conn):
            _check_settings(conn)
            return _ensure_schema(conn)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StorageError(f"cannot connect to postgres: {reason}") from None
    except psycopg.errors.InsufficientPrivilege as exc:
        # the server's primary message names the right and the object, no value
        reason = exc.diag.message_primary or "permission denied"
        raise StorageError(
            f"postgres role may not create or use the medsecrets tables ({reason}):"
            " grant it the rights, or have the tables' owner open the store first"
        ) from None
    except (psycopg.Error, _NoAnswer) as exc:
        raise _wrap("open", exc) from None


def _ended_by_server(conn: Connection[TupleRow]) -> bool:
    """Whether idle ``conn`` is closed, broken, or readable: with no query outstanding, the
    server sends nothing unprompted but the notice it ends a connection with, then its
    end of the socket (a rare unprompted message makes a sound connection look ended:
    it is replaced, which costs a connect)."""
    if conn.closed or conn.broken:
        return True
    from psycopg import OperationalError

    try:
        fd = conn.pgconn.socket
    except OperationalError:  # no socket any more
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _describe(dsn: str) -> str:
    """``host=… port=… dbname=…`` for reprs: never the password or other options."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "dsn=<unparsable>"
    return " ".join(f"{k}={params[k]}" for k in ("host", "port", "dbname") if k in params)


def _check_settings(conn: Connection[TupleRow]) -> None:
    """Refuse a server or database that can lose committed writes or mangle keys."""
    for setting, unsafe in _UNSAFE_SETTINGS:
        value = _show(conn, setting)
        if value.lower() in unsafe:
            raise StorageError(
                f"postgres setting {setting} is {value!r}: writes would not be durable"
            )
    encoding = _show(conn, "server_encoding")
    if encoding.upper() not in {"UTF8", "UTF-8"}:
        raise StorageError(f"postgres server_encoding is {encoding!r}, need UTF8")


def _show(conn: Connection[TupleRow], setting: str) -> str:
    row = conn.execute(
        "SELECT setting FROM pg_catalog.pg_settings WHERE name = %s", (setting,)
    ).fetchone()
    if row is None:
        raise StorageError(f"postgres setting {setting} is unknown")
    return str(row[0])


def _missing(conn: Connection[TupleRow], relation: str) -> bool:
    """Whether ``relation`` (a table or index name, found by the search path) is missing."""
    row = conn.execute("SELECT to_regclass(%s)", (relation,)).fetchone()
    return row is None or row[0] is None


def _format_of(comment: object) -> int:
    """The format a kv table's comment names (0: none, as before tables were marked)."""
    if not isinstance(comment, str) or not comment.startswith(_FORMAT_MARK):
        return 0
    number = comment[len(_FORMAT_MARK) :]
    return int(number) if number.isdigit() and len(number) < 6 else 0


def _ensure_schema(conn: Connection[TupleRow]) -> bool:
    """Create the tables if missing (serialised by an advisory lock), mark their format
    (the kv table's comment), refuse a format newer than this code reads; check the key
    collation. Whether ``medsecrets_check`` is there for shared ``Expect``s: a role that may
    not create it (the tables made by a DBA with older code, which had no such function)
    still opens the store, with a warning (it used to be refused until the owner opened it)."""
    from psycopg.errors import InsufficientPrivilege

    shared = True
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for relation, statement in _SCHEMA:
            if _missing(conn, relation):
                conn.execute(statement.encode())
        for function, body in _CONDITIONS:
            source = conn.execute(_CONDITION_SOURCE, (function,)).fetchone()
            if source is not None and source[0] == body:
                continue
            create = (
                f"CREATE OR REPLACE FUNCTION {function}(h BYTEA, v BYTEA) RETURNS VOID"
                f" LANGUAGE plpgsql AS $${body}$$"
            ).encode()
            if function != _CHECK_FUNCTION:
                conn.execute(create)
                continue
            try:
                with conn.transaction():
                    conn.execute(create)
            except InsufficientPrivilege:
                shared = False
                _log.warning(
                    "postgres role may not create the function %s: read checks lock rows"
                    " for a write (FOR UPDATE), so writes queue on the keyring row; have"
                    " the tables' owner open the store once",
                    _CHECK_FUNCTION,
                )
        row = conn.execute(f"SELECT obj_description('{_KV}'::regclass, 'pg_class')").fetchone()
        found = _format_of(row[0] if row is not None else None)
        if found > _FORMAT:
            raise StorageError(
                f"postgres table {_KV} has format {found}, newer than this medsecrets reads "
                f"({_FORMAT}): run the medsecrets that wrote it, or a newer one"
            )
        if found < _FORMAT:  # new, or made before tables were marked
            # a role that does not own the table (made by a DBA) may not mark it: use it
            with contextlib.suppress(InsufficientPrivilege), conn.transaction():
                conn.execute(f"COMMENT ON TABLE {_KV} IS '{_FORMAT_MARK}{_FORMAT}'")
    for table, column in ((_KV, "key"), (_LEASES, "name")):
        row = conn.execute(_KEY_COLLATION, (table, column)).fetchone()
        if row is None or row[0] != "C":
            raise StorageError(f'postgres table {table}.{column} must use COLLATE "C"')
    return shared
