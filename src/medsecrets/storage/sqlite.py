"""``SqliteStorage``: the embedded default backend, one SQLite file.

Durability: the file runs in ``journal_mode=WAL`` with ``synchronous=NORMAL``:
a ``COMMIT`` appends to the write-ahead log without an fsync, so no connection
holds the write lock across a disk flush. The flush is ``WalSync``'s
(``storage.walsync``): one ``fdatasync`` of the log covers every commit
before it (a blocking writer makes it when none is under way, a deferred
one's waiter gets it from ``WalSync``'s thread), and a write returns only once
the flush that covers it is done (outside ``deferring()``, below). The same
thread checkpoints (``_checkpoint``). Both settings
are read back after they are set and the store refuses to open
(``StorageError`` naming the setting) if the effective value is weaker, for
example a ``:memory:`` path or a file system that cannot do WAL. After a
failed fsync every later write fails (the dirty pages may be gone); reopen.

Deferred durability (``DefersDurability``): inside ``deferring()`` a write
runs on the calling thread (an event loop's) and returns at once; the caller
awaits ``settled_async()`` before it reports the write. On a running loop the
deferred writes of one loop iteration share one transaction (``_LoopTxn``):
the first opens it on the thread's own connection, each applies inside it as
one atomic member (a savepoint), and a callback commits it at the loop's next
iteration, so they share one ``COMMIT`` and the pages it writes (group commit
on the loop; a blocking write, a lease or ``close()`` on that thread commits
it first, and one a stopped loop left open is committed by the next deferred
write or read on its thread, or by any thread waiting for the write lock).
Until the commit only that thread's own connection sees the members: a task
that wrote or read there meanwhile is tied to the transaction, and its
``settled_async()`` is done once the commit is durable, or raises when the
commit failed (then every member failed, and a read of one reported
nothing); a task tied to a failed transaction stays tied to it, so its later
``settled_async()`` calls raise too. The tie is the task's own (a context
variable): a task that awaits another task's deferred writes relies on that
task's ``settled_async()``. Committed writes are visible to readers in any
process though not yet durable: a reader that reports what it read must
await ``settled_async()`` too (the server does, for every response); another
process cannot, so with several worker processes a read elsewhere may report
a write up to one fsync (about a millisecond) before it is durable, which
only an operating-system crash in that window could undo. Without a running
loop a deferred write commits alone at once.

Concurrency: connections come from a small pool (one per concurrently active
thread, reused); every write runs in ``BEGIN IMMEDIATE`` with a busy timeout,
so several threads and several processes may write the same file at once.

Group commit: writes (``put``, ``delete``, ``batch``) from threads of one
process that arrive while a commit is in progress are committed together in
the next transaction, so they share one fsync. Inside it the members are
applied in arrival order, each atomically: a member whose ``Expect`` fails
(against the file as the members before it left it) is skipped alone and gets
``ConflictError``; the others commit. The group costs a fixed handful of
statements whatever its size (every ``Expect`` checked by one ``SELECT``, the
net writes of all members by one multi-row ``INSERT … ON CONFLICT`` and one
``DELETE``), because every statement releases and re-takes the GIL, and with
many threads running Python each re-take can wait a whole switch interval.
Each caller returns only after the commit that holds its write is durable,
with its own result.

Reads are cached (``storage.readcache``): a ``get`` of a key read before,
with nothing written to the file since by any process, is answered from
memory without a query. "Nothing written since" is the change stamp
(``storage.stamp``, the side file ``<database>-stamp``) that every commit
through this class bumps, in every process; so the cache never serves a value
older than the last write that returned, wherever it ran. Only raw (sealed)
values are cached.

The database file is created with mode 0600; SQLite gives its ``-wal`` and
``-shm`` files the mode of the database file, the stamp file is 0600 too.

Keys are ``TEXT`` with SQLite's default ``BINARY`` collation, which compares
UTF-8 bytes: that is code point order. ``list`` matches prefixes with a key
range, never ``LIKE``, so ``%`` and ``_`` are literal.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import contextvars
import dataclasses
import functools
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import ConflictError, LeaseLostError, StorageError, StorageUnavailable
from medsecrets.loops import running_loop, running_loop_or_none
from medsecrets.storage.base import (
    Delete,
    Expect,
    Lease,
    ListPage,
    Operation,
    Put,
    WriteLockBusy,
)
from medsecrets.storage.readcache import ReadCache
from medsecrets.storage.stamp import ChangeStamp
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
from medsecrets.storage.walsync import DATASYNC, WalSync

__all__ = ["SqliteStorage"]

_T = TypeVar("_T")

#: Statements run on every new connection, then verified by ``_verify_settings``.
_SETUP_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA wal_autocheckpoint=0",  # WalSync's thread checkpoints
)
_SYNCHRONOUS_NORMAL = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS leases ("
    " name TEXT PRIMARY KEY, holder TEXT NOT NULL, token TEXT NOT NULL,"
    " expires_at REAL NOT NULL)",
)

#: The columns of each table, checked at open (a leases table, or a view named kv, of
#: another shape failed at the first write as SQLITE_ERROR).
_COLUMNS = {"kv": ["key", "value"], "leases": ["name", "holder", "token", "expires_at"]}
_SCHEMA_KINDS = "SELECT name, type FROM sqlite_schema WHERE name IN ('kv', 'leases')"

_APPLICATION_ID = 0x4D534543
"""``PRAGMA application_id`` of a medsecrets database ("MSEC")."""
_FORMAT = 1
"""``PRAGMA user_version``: the layout this code reads and writes."""

_GET = "SELECT value FROM kv WHERE key = ?"
_LIST_BOUNDED = "SELECT key FROM kv WHERE key >= ? AND key < ? AND key > ? ORDER BY key LIMIT ?"
_LIST_UNBOUNDED = "SELECT key FROM kv WHERE key >= ? AND key > ? ORDER BY key LIMIT ?"
_LEASE_GET = "SELECT token, expires_at FROM leases WHERE name = ?"
_LEASE_SET = (
    "INSERT INTO leases (name, holder, token, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token,"
    " expires_at = excluded.expires_at"
)
_LEASE_RENEW = "UPDATE leases SET expires_at = ? WHERE name = ? AND token = ? AND expires_at > ?"
_LEASE_RELEASE = "DELETE FROM leases WHERE name = ? AND token = ?"

_MEMORY_PATHS = frozenset({"", ":memory:"})
_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every database file
_NO_OWN = object()  # ``_get_own``: this thread has no connection of its own to read on

#: Set inside ``SqliteStorage.deferring()``: the storage whose writes return before durable.
_DEFERRING: contextvars.ContextVar[SqliteStorage | None] = contextvars.ContextVar(
    "medsecrets_sqlite_deferring", default=None
)


@dataclasses.dataclass(eq=False, slots=True)
class _LoopTxn:
    """The deferred writes of one event loop iteration: one open transaction on
    the loop thread's own connection (module docstring), holding ``_txn_lock``
    until ``SqliteStorage._end_loop_txn`` commits it.

    ``waiters`` are the futures handed out by ``settled_async`` (one per call:
    a cancelled waiter cancels no other), settled once the commit is durable;
    ``seq`` is the commit's ``WalSync`` number and ``error`` what made it
    fail, once ``ended``.
    """

    conn: sqlite3.Connection
    loop: asyncio.AbstractEventLoop
    thread: int
    members: int = 0
    ended: bool = False
    seq: int = 0
    error: StorageError | None = None
    waiters: builtins.list[asyncio.Future[None]] = dataclasses.field(default_factory=list)


#: The loop transaction the current task last wrote or read uncommitted rows in (its
#: ``settled_async()`` waits for that commit), or one of them that failed (``_tie``).
_TIED: contextvars.ContextVar[_LoopTxn | None] = contextvars.ContextVar(
    "medsecrets_sqlite_loop_txn", default=None
)

#: Seconds between two looks for a stopped loop's transaction while waiting for
#: the write lock (``SqliteStorage._write_lock``).
_STALE_CHECK = 0.1


def _tie(txn: _LoopTxn) -> None:
    """Tie the current task to ``txn`` (``_loop_lock`` held). A failed transaction it is
    tied to stays its tie: every later ``settled_async()`` of the task raises, so a
    failure is never covered up by a later transaction's success."""
    current = _TIED.get()
    if current is not txn and (current is None or current.error is None):
        _TIED.set(txn)


class _Pending:
    """One caller's write waiting for a group commit.

    ``wake`` is a lock held from creation; releasing it wakes the caller (a
    bare lock: cheaper to create and signal than an ``Event``).
    """

    __slots__ = ("done", "error", "lead", "ops", "wake")

    def __init__(self, ops: Sequence[Operation]) -> None:
        self.ops = ops
        self.done = False
        self.lead = False  # this caller commits the next group
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


#: Rows per multi-row statement: 2 parameters each, within SQLite's oldest
#: default limit of 999 parameters. The statements below are built from
#: constant text and a count of ``?`` placeholders only (hence the ``noqa``).
_CHUNK = 256


@functools.lru_cache(maxsize=_CHUNK)
def _expect_sql(count: int) -> str:
    """One row of ``count`` booleans: whether each key holds the value given after it."""
    return "SELECT " + ", ".join(["(SELECT value FROM kv WHERE key = ?) IS ?"] * count)  # noqa: S608


@functools.lru_cache(maxsize=_CHUNK)
def _put_sql(count: int) -> str:
    """Upsert ``count`` (key, value) rows (keys distinct) in one statement."""
    return (
        "INSERT INTO kv (key, value) VALUES "  # noqa: S608
        + ", ".join(["(?, ?)"] * count)
        + " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )


@functools.lru_cache(maxsize=_CHUNK)
def _delete_sql(count: int) -> str:
    """Delete ``count`` keys in one statement."""
    return "DELETE FROM kv WHERE key IN (" + ", ".join(["?"] * count) + ")"  # noqa: S608


def _stored_matches(conn: sqlite3.Connection, expects: Sequence[Expect]) -> list[bool]:
    """Whether the file holds each ``Expect``'s value (``None``: the key is absent).

    One single-row ``SELECT`` per ``_CHUNK`` conditions; ``IS`` compares blobs
    byte for byte and treats two NULLs as equal.
    """
    held: list[bool] = []
    for start in range(0, len(expects), _CHUNK):
        chunk = expects[start : start + _CHUNK]
        params = [item for op in chunk for item in (op.key, op.value)]
        row = conn.execute(_expect_sql(len(chunk)), params).fetchone()
        held.extend(bool(cell) for cell in row)
    return held


def _apply_group(conn: sqlite3.Connection, *, group: Sequence[_Pending]) -> None:
    """Apply ``group`` in order inside an open transaction, each member atomically.

    Equivalent to one savepoint per member: a member's ``Expect`` conditions
    are checked against the file as the members before it left it (their net
    writes, else the stored values read at the start); a member that fails
    gets ``ConflictError`` in ``error`` and contributes nothing. The net
    result of the members that pass (the last write to each key wins) is
    then written by a few multi-row statements.
    """
    expects = [op for pending in group for op in pending.ops if isinstance(op, Expect)]
    held = iter(_stored_matches(conn, expects) if expects else ())
    written: dict[str, bytes | None] = {}  # key -> value after the members so far (None: gone)
    for pending in group:
        failed: str | None = None
        for op in pending.ops:
            if isinstance(op, Expect):
                stored = next(held)  # consumed for every Expect, to stay aligned
                if failed is None and not (
                    written[op.key] == op.value if op.key in written else stored
                ):
                    failed = op.key
        if failed is not None:
            pending.error = ConflictError(f"batch expectation failed on key {failed!r}")
            continue
        for op in pending.ops:
            if isinstance(op, Put):
                written[op.key] = op.value
            elif isinstance(op, Delete):
                written[op.key] = None
    _write_rows(conn, written)


def _write_rows(conn: sqlite3.Connection, written: dict[str, bytes | None]) -> None:
    """Store every ``key -> value`` of ``written``, deleting the keys mapped to ``None``."""
    puts = [item for key, value in written.items() if value is not None for item in (key, value)]
    deletes = [key for key, value in written.items() if value is None]
    for start in range(0, len(puts), 2 * _CHUNK):
        rows = puts[start : start + 2 * _CHUNK]
        conn.execute(_put_sql(len(rows) // 2), rows)
    for start in range(0, len(deletes), _CHUNK):
        keys = deletes[start : start + _CHUNK]
        conn.execute(_delete_sql(len(keys)), keys)


def _wrap(op: str, exc: sqlite3.Error) -> StorageError:
    """A ``StorageError`` naming the operation and SQLite's error name only."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return StorageError(f"sqlite {op} failed: {name}")


class SqliteStorage:
    """A ``StorageBackend`` on one SQLite file (see the module docstring).

    ``timeout`` is the busy timeout in seconds a write waits for the file's
    write lock held by another connection or process. ``clock`` supplies the
    wall time for leases (``expires_at = clock.now().timestamp() + ttl``).
    ``read_cache=False`` runs a query for every read (the change stamp is still
    bumped after each commit, for the other processes' caches). ``_fsync`` is
    the write-ahead log's flush (a seam for tests).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        clock: Clock | None = None,
        read_cache: bool = True,
        _fsync: Callable[[int], None] = DATASYNC,
    ) -> None:
        self._path = os.fspath(path)
        self._timeout = timeout
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._idle: collections.deque[sqlite3.Connection] = collections.deque()
        self._closed = False
        self._queue: builtins.list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._leading = False  # a caller is committing a group now
        self._txn_lock = threading.Lock()  # one write transaction of this process at a time
        # Deferred writers' own connections (an event loop's): one per thread, used by that
        # thread only, for its reads too (a reader on another connection than the writer
        # re-reads every page the write changed: 45 against 8 µs a read).
        self._own = threading.local()
        self._owned: builtins.list[sqlite3.Connection] = []
        # The event loop's open transaction (``_LoopTxn``); the lock guards its use
        # against ``close()`` from another thread.
        self._loop_txn: _LoopTxn | None = None
        self._loop_lock = threading.Lock()
        self._closing = False  # set under ``_loop_lock``: no loop transaction opens after
        self._retired: set[sqlite3.Connection] = set()  # own connections left unusable
        # SQLite keeps the log next to the file a symlinked path resolves to.
        self._sync = WalSync(
            os.path.realpath(self._path) + "-wal", checkpoint=self._checkpoint, fsync=_fsync
        )
        self._stamp: ChangeStamp | None = None
        self._cache: ReadCache | None = None
        _create_private_file(self._path)
        try:
            self._transaction("open", _create_schema)
            if self._path not in _MEMORY_PATHS:
                # the real path: processes opening the file through a symlink share one stamp
                self._stamp = _open_stamp(os.path.realpath(self._path) + "-stamp")
                if read_cache:
                    self._cache = ReadCache(self._stamp.read)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SqliteStorage(path={self._path!r}, {state})"

    @property
    def read_cache(self) -> bool:
        """Whether reads are served from the stamp-validated cache (see the class)."""
        return self._cache is not None

    # -- connections ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=128,
            )
        except sqlite3.Error as exc:
            raise _wrap("open", exc) from None
        try:
            for pragma in _SETUP_PRAGMAS:
                conn.execute(pragma).fetchall()
            _verify_settings(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _wrap("open", exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkout(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError("storage is closed")
        try:
            return self._idle.pop()
        except IndexError:
            return self._connect()

    def _checkin(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # a rollback that failed: closing it rolls back
            conn.close()
            return
        self._idle.append(conn)
        if self._closed:
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            conn.close()

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = self._checkout()
        try:
            yield conn
        finally:
            self._checkin(conn)

    def _checkpoint(self) -> None:
        """Two passive checkpoints (``WalSync`` calls this from its thread): the first
        copies the log while writes go on; the second, with this process's writes held
        off, copies the few frames written meanwhile. A checkpoint that copies the whole
        log lets the next write restart the log from its start (SQLite restarts it only
        then), so the log stays small and its flushes overwrite blocks instead of
        growing the file. The second holds this process's writers across its two disk
        flushes (under 1 ms here), once per ``CHECKPOINT_EVERY`` writes."""
        with self._conn() as conn:
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with self._write_lock():  # (nothing left to copy: no flush either)
                    if not self._closed:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                raise _wrap("checkpoint", exc) from None

    def _transaction(self, op: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body(conn)`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on
        error); returns once the commit is durable."""
        self._end_own_loop_txn()
        self._sync.check()
        with self._conn() as conn, self._write_lock():
            result, seq = self._commit_locked(conn, op, body)
        self._sync.wait(seq)
        return result

    def _commit_locked(
        self,
        conn: sqlite3.Connection,
        op: str,
        body: Callable[[sqlite3.Connection], _T],
        writes: int = 1,
        *,
        deferred: bool = False,
    ) -> tuple[_T, int]:
        """``body`` in one transaction on ``conn`` (``_txn_lock`` held); its result and
        the commit's ``WalSync`` number. SQLite errors become ``StorageError`` (an
        ``SQLITE_BUSY`` at ``BEGIN``, nothing written: ``WriteLockBusy`` for a
        ``deferred`` write, which never waits; else one naming the busy timeout
        waited, which another connection held the lock past)."""
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY"):
                    if deferred:
                        raise WriteLockBusy("sqlite write lock busy") from None
                    raise StorageUnavailable(
                        "sqlite write lock held by another connection for over"
                        f" {self._timeout:g} s (SQLITE_BUSY): nothing was written"
                    ) from None
                raise
            try:
                result = body(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            seq = self._commit_open(conn, writes)
        except sqlite3.Error as exc:
            raise _wrap(op, exc) from None
        return result, seq

    def _commit_open(self, conn: sqlite3.Connection, writes: int) -> int:
        """``COMMIT`` the transaction of ``writes`` writes open on ``conn`` (rolled
        back if that fails); the commit's ``WalSync`` number."""
        try:
            seq = self._sync.begin(writes)  # from here the commit may be visible
            try:
                conn.execute("COMMIT")
            finally:
                self._sync.done(seq)  # its frames are written (or it failed)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return seq

    # -- key/value -----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The value at ``key`` or ``None``."""
        check_storage_key(key)
        txn = self._loop_txn
        if txn is not None and txn.thread == threading.get_ident():
            txn = self._own_loop_txn()
            if txn is not None:
                return self._get_in_loop_txn(txn, key)
        cache = self._cache
        stamp = 0
        if cache is not None:
            cached, stamp = cache.lookup(key)
            if cached is not None:
                if self._closed:
                    raise StorageError("storage is closed")
                return cached
        row: Any = self._get_own(key)
        if row is _NO_OWN:
            conn = self._checkout()
            try:
                row = conn.execute(_GET, (key,)).fetchone()
            except sqlite3.Error as exc:
                raise _wrap("get", exc) from None
            finally:
                self._checkin(conn)
        if row is None:
            return None
        value = bytes(row[0])
        if cache is not None:
            cache.offer(key, value, stamp)
        return value

    def _get_in_loop_txn(self, txn: _LoopTxn, key: str) -> bytes | None:
        """Read ``key`` inside this thread's open loop transaction, which ties the
        calling task to its commit; never from or into the read cache (the value
        may not be committed yet)."""
        with self._loop_lock:
            ended = self._loop_txn is not txn  # committed meanwhile (by close())
            if not ended:
                try:
                    row = txn.conn.execute(_GET, (key,)).fetchone()
                except sqlite3.Error as exc:
                    raise _wrap("get", exc) from None
                _tie(txn)
        if ended:
            return self.get(key)
        return None if row is None else bytes(row[0])

    def _get_own(self, key: str) -> object:
        """The row of ``key`` read on this thread's deferred-write connection, if it has
        one (``_NO_OWN`` if not, or if that read would wait: it never waits)."""
        conn: sqlite3.Connection | None = getattr(self._own, "conn", None)
        if conn is None or self._closed or conn in self._retired:
            return _NO_OWN
        try:
            return conn.execute(_GET, (key,)).fetchone()
        except sqlite3.OperationalError as exc:
            if str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY"):
                return _NO_OWN
            raise _wrap("get", exc) from None
        except sqlite3.Error as exc:
            raise _wrap("get", exc) from None

    def put(self, key: str, value: bytes) -> None:
        """Durably store ``value`` at ``key``."""
        check_storage_key(key)
        check_value(value)
        self._write((Put(key, value),))

    def delete(self, key: str) -> None:
        """Durably remove ``key`` (no error when absent)."""
        check_storage_key(key)
        self._write((Delete(key),))

    def list(self, prefix: str = "", *, after: str = "", limit: int = 1000) -> ListPage:
        """Keys starting with ``prefix`` sorting after ``after``, code point order."""
        check_prefix(prefix)
        check_prefix(after, "list after")
        check_limit(limit)
        upper = prefix_upper_bound(prefix)
        with self._conn() as conn:
            try:
                if upper is None:
                    cur = conn.execute(_LIST_UNBOUNDED, (prefix, after, limit + 1))
                else:
                    cur = conn.execute(_LIST_BOUNDED, (prefix, upper, after, limit + 1))
                keys = tuple(str(row[0]) for row in cur.fetchall())
            except sqlite3.Error as exc:
                raise _wrap("list", exc) from None
        if len(keys) > limit:
            return ListPage(keys=keys[:limit], next_after=keys[limit - 1])
        return ListPage(keys=keys, next_after=None)

    def batch(self, ops: Sequence[Operation]) -> None:
        """Check every ``Expect``, then apply ``Put``/``Delete`` in order, atomically."""
        check_ops(ops)
        if not ops:
            return

        self._write(ops)

    def deferring(self) -> contextlib.AbstractContextManager[None]:
        """Writes of this thread or task return at once, not yet durable (module docstring)."""
        return _deferring(self)

    def settled_async(self) -> asyncio.Future[None] | None:
        """``None`` if every commit so far is durable and the calling task is tied to
        no loop transaction still open or failed, else a future (``DefersDurability``)."""
        txn = _TIED.get()
        if txn is not None:
            with self._loop_lock:  # ``ended`` and ``error`` change under it
                if txn.error is not None or not txn.ended:
                    future: asyncio.Future[None] = running_loop().create_future()
                    if txn.error is not None:
                        future.set_exception(StorageError(str(txn.error)))
                    else:
                        txn.waiters.append(future)
                    return future
        pending = self._sync.pending
        return self._sync.wait_async(pending) if pending else None

    def _write(self, ops: Sequence[Operation]) -> None:
        """Queue ``ops`` for the next group commit and wait until it is durable.

        The first caller to find no commit running leads: it commits every
        write queued so far in one transaction and hands the lead to the
        oldest write queued meanwhile (or gives it up); then it waits for the
        fsync that covers the commit and wakes the group. Everyone else sleeps
        on its own lock until its write is durable or it is made leader.
        Inside ``deferring()`` the write is committed at once, alone, and
        not waited for; it never waits for a lock either: when this process's
        or SQLite's write lock is taken it raises ``WriteLockBusy`` having
        written nothing.
        """
        self._sync.check()
        pending = _Pending(ops)
        if _DEFERRING.get() is self:
            self._write_now(pending)
            return
        self._end_own_loop_txn()
        with self._queue_lock:
            self._queue.append(pending)
            if not self._leading:
                self._leading = pending.lead = True
        if not pending.lead:
            pending.wake.acquire()
        if not pending.done:  # made leader
            self._lead()
        if pending.error is not None:
            raise pending.error

    def _write_now(self, pending: _Pending) -> None:
        """The deferred write, on a connection of this thread's own that never waits:
        a member of the loop's open transaction (opening it if need be), or on no
        running loop committed alone."""
        loop = running_loop_or_none()
        if loop is None:
            self._commit_alone(pending)
            return
        self._own_loop_txn()  # one a stopped loop left open here is committed first
        with self._loop_lock:
            txn = self._loop_txn
            if txn is None or txn.thread != threading.get_ident():
                txn = self._begin_loop_txn(loop)
            try:
                self._apply_member(txn, pending)
            finally:
                _tie(txn)
                if self._stamp is not None:  # readers' caches: this key may have changed
                    self._stamp.bump()
        if pending.error is not None:
            raise pending.error

    def _own_conn(self) -> sqlite3.Connection:
        """This thread's own connection (``_txn_lock`` held), made on first use."""
        conn: sqlite3.Connection | None = getattr(self._own, "conn", None)
        if conn is None or conn in self._retired:
            conn = self._connect()
            try:
                conn.execute("PRAGMA busy_timeout=0").fetchall()  # never waits for a lock
            except sqlite3.Error as exc:
                conn.close()
                raise _wrap("open", exc) from None
            self._own.conn = conn
            self._owned.append(conn)
        return conn

    def _commit_alone(self, pending: _Pending) -> None:
        """A deferred write outside a running loop: committed at once, alone."""
        if not self._txn_lock.acquire(blocking=False):
            raise WriteLockBusy("a write transaction of this process is under way")
        try:
            if self._closed:
                raise StorageError("storage is closed")
            conn = self._own_conn()
            try:
                self._commit_locked(
                    conn,
                    "batch",
                    functools.partial(_apply_group, group=(pending,)),
                    deferred=True,
                )
            finally:
                if conn.in_transaction:  # a rollback that failed
                    self._retire(conn)
                if self._stamp is not None:  # also after a failure: the outcome may be unknown
                    self._stamp.bump()
        finally:
            self._txn_lock.release()
        if pending.error is not None:
            raise pending.error

    def _begin_loop_txn(self, loop: asyncio.AbstractEventLoop) -> _LoopTxn:
        """Open the loop's transaction (``_loop_lock`` held) and schedule its commit;
        ``WriteLockBusy`` if this process or another holds the write lock."""
        if not self._txn_lock.acquire(blocking=False):
            raise WriteLockBusy("a write transaction of this process is under way")
        try:
            if self._closed or self._closing:
                raise StorageError("storage is closed")
            conn = self._own_conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY"):
                    raise WriteLockBusy("sqlite write lock busy") from None
                raise _wrap("batch", exc) from None
            except sqlite3.Error as exc:
                raise _wrap("batch", exc) from None
        except BaseException:
            self._txn_lock.release()
            raise
        txn = _LoopTxn(conn, loop, threading.get_ident())
        self._loop_txn = txn
        loop.call_soon(self._commit_loop_txn, txn)
        return txn

    def _apply_member(self, txn: _LoopTxn, pending: _Pending) -> None:
        """Apply ``pending`` inside ``txn`` atomically (a savepoint). A failure that
        leaves the transaction open undoes this member only; one that ended it
        (SQLite rolls back the whole transaction on some errors), or a savepoint
        that cannot be undone or released, ends ``txn`` as failed, every member
        with it."""
        conn = txn.conn
        txn.members += 1
        try:
            conn.execute("SAVEPOINT member")
        except sqlite3.Error as exc:
            raise self._lose_loop_txn(txn, _wrap("batch", exc)) from None
        try:
            _apply_group(conn, group=(pending,))
        except BaseException as exc:
            error = _wrap("batch", exc) if isinstance(exc, sqlite3.Error) else None
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO member")
                    conn.execute("RELEASE member")
            except sqlite3.Error as undo:
                error = error or _wrap("batch", undo)
                raise self._lose_loop_txn(txn, error) from None
            if not conn.in_transaction:
                self._lose_loop_txn(txn, error or StorageError("sqlite batch failed"))
            if error is not None:
                raise error from None
            raise
        try:
            conn.execute("RELEASE member")
        except sqlite3.Error as exc:
            raise self._lose_loop_txn(txn, _wrap("batch", exc)) from None

    def _lose_loop_txn(self, txn: _LoopTxn, error: StorageError) -> StorageError:
        """End ``txn`` as failed (rolled back, every member failed); ``error``, to raise."""
        if self._loop_txn is txn:
            self._end_loop_txn(txn, error)
        return error

    def _commit_loop_txn(self, txn: _LoopTxn) -> None:
        """The loop callback that commits ``txn`` (unless something committed it first)."""
        with self._loop_lock:
            if self._loop_txn is txn:
                self._end_loop_txn(txn)

    def _retire(self, conn: sqlite3.Connection) -> None:
        """Close a thread's own connection that a failed rollback left inside a
        transaction (closing rolls it back); its thread gets a new one."""
        self._retired.add(conn)
        with contextlib.suppress(ValueError):
            self._owned.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """``_txn_lock`` for a caller that waits for it: meanwhile a loop transaction
        whose loop no longer runs (stopped before the commit's callback) is
        committed here, so it cannot hold the lock for ever."""
        while not self._txn_lock.acquire(timeout=_STALE_CHECK):
            txn = self._loop_txn
            if txn is not None and not txn.loop.is_running():
                with self._loop_lock:
                    if self._loop_txn is txn and not txn.loop.is_running():
                        self._end_loop_txn(txn)
        try:
            yield
        finally:
            self._txn_lock.release()

    def _own_loop_txn(self) -> _LoopTxn | None:
        """This thread's open loop transaction of the running loop, if any. One that a
        loop no longer running here left open (it stopped before the commit's
        callback) is committed now."""
        txn = self._loop_txn
        if txn is None or txn.thread != threading.get_ident():
            return None
        if txn.loop is not running_loop_or_none():
            self._commit_loop_txn(txn)
            return None
        return txn

    def _end_own_loop_txn(self) -> None:
        """Commit this thread's open loop transaction now, before a write that waits
        for ``_txn_lock`` (which that transaction holds)."""
        txn = self._loop_txn
        if txn is not None and txn.thread == threading.get_ident():
            self._commit_loop_txn(txn)

    def _end_loop_txn(self, txn: _LoopTxn, error: StorageError | None = None) -> None:
        """Commit ``txn`` (or, given ``error``, roll it back), release the write lock
        and settle its waiters (``_loop_lock`` held; any thread)."""
        raised: BaseException | None = None
        try:
            if error is None:
                try:
                    txn.seq = self._commit_open(txn.conn, txn.members)
                except sqlite3.Error as exc:
                    error = _wrap("batch", exc)
                except StorageError as exc:  # closed, or durability failed before
                    error = StorageError(str(exc))
                except BaseException as exc:  # an interrupt: re-raised once settled
                    error = StorageError("sqlite batch interrupted: outcome unknown")
                    raised = exc
            elif txn.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    txn.conn.execute("ROLLBACK")
        finally:
            txn.error = error  # before ``ended``: an ended transaction's outcome is final
            txn.ended = True
            if txn.conn.in_transaction:  # a rollback that failed: closing rolls back
                self._retire(txn.conn)
            self._loop_txn = None
            if self._stamp is not None:  # also after a failure: the outcome may be unknown
                self._stamp.bump()
            self._txn_lock.release()
        self._settle_loop_txn(txn)
        if raised is not None:
            raise raised

    def _settle_loop_txn(self, txn: _LoopTxn) -> None:
        """Have ``txn``'s waiters settled on its loop (``txn`` ended)."""
        if txn.waiters:
            if txn.loop is running_loop_or_none():
                self._resolve_loop_txn(txn)
            else:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    txn.loop.call_soon_threadsafe(self._resolve_loop_txn, txn)

    def _resolve_loop_txn(self, txn: _LoopTxn) -> None:
        """On ``txn``'s loop: settle its waiters with its commit's durability."""
        waiters, txn.waiters = txn.waiters, []
        if txn.error is not None:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StorageError(str(txn.error)))
            return
        durable = self._sync.wait_async(txn.seq)
        durable.add_done_callback(functools.partial(_copy_outcome, waiters))

    def _lead(self) -> None:
        with self._queue_lock:
            group, self._queue = self._queue, []
        seq = 0
        try:
            seq = self._commit_group(group)
        finally:
            with self._queue_lock:
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.lead = True
                else:
                    self._leading = False
            if successor is not None:  # the next commit starts while this one syncs
                successor.wake.release()
            try:
                if seq:
                    self._sync.wait(seq)
            except StorageError as exc:
                for pending in group:
                    pending.error = pending.error or exc
            finally:
                for pending in group:
                    pending.done = True
                    pending.wake.release()

    def _commit_group(self, group: Sequence[_Pending]) -> int:
        """Commit every pending write of ``group`` in one transaction (``_apply_group``).

        Sets each member's ``error`` (its ``ConflictError``, or the failure of
        the whole transaction) and bumps the change stamp; returns the
        commit's ``WalSync`` sequence number (0: nothing committed). Waiting
        for durability and waking are the caller's.
        """
        seq = 0
        try:
            with self._conn() as conn, self._write_lock():
                _, seq = self._commit_locked(
                    conn, "batch", functools.partial(_apply_group, group=group), len(group)
                )
        except BaseException as exc:
            for pending in group:
                pending.error = pending.error or exc
        finally:
            if self._stamp is not None:  # also after a failure: the outcome may be unknown
                self._stamp.bump()
        return seq

    # -- leases --------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take ``name`` for ``ttl`` seconds if free or expired, else ``None``."""
        check_storage_key(name)
        check_holder(holder)
        ttl = check_ttl(ttl)

        def body(conn: sqlite3.Connection) -> Lease | None:
            now = self._clock.now().timestamp()
            row = conn.execute(_LEASE_GET, (name,)).fetchone()
            if row is not None and float(row[1]) > now:
                return None
            lease = Lease(
                name=name, holder=holder, token=secrets.token_hex(16), expires_at=now + ttl
            )
            conn.execute(_LEASE_SET, (name, holder, lease.token, lease.expires_at))
            return lease

        return self._transaction("acquire_lease", body)

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend ``lease`` to ``now + ttl``; ``LeaseLostError`` if expired or taken."""
        ttl = check_ttl(ttl)

        def body(conn: sqlite3.Connection) -> Lease | None:
            now = self._clock.now().timestamp()
            expires = now + ttl
            cur = conn.execute(_LEASE_RENEW, (expires, lease.name, lease.token, now))
            if cur.rowcount != 1:
                return None
            return Lease(
                name=lease.name, holder=lease.holder, token=lease.token, expires_at=expires
            )

        renewed = self._transaction("renew_lease", body)
        if renewed is None:
            raise LeaseLostError(f"lease {lease.name!r} is no longer held")
        return renewed

    def release_lease(self, lease: Lease) -> None:
        """Free ``lease`` if this token still holds it (no error otherwise)."""
        self._transaction(
            "release_lease", lambda conn: conn.execute(_LEASE_RELEASE, (lease.name, lease.token))
        )

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Close every connection (busy ones as they are handed back). Idempotent.

        A write transaction under way finishes first; every commit is durable
        before the connections close (the last close checkpoints and removes
        the log); a write after this raises ``StorageError``.
        """
        with self._loop_lock:  # an open loop transaction is committed first; none opens after
            self._closing = True
            txn = self._loop_txn
            if txn is not None:
                self._end_loop_txn(txn)
        with self._txn_lock:
            self._closed = True
        self._sync.close()  # not under the lock: its checkpoint takes it
        with self._txn_lock:  # no deferred write runs on these now
            owned, self._owned = self._owned, []
            for conn in owned:
                conn.close()
        self._drain()
        if self._cache is not None:
            self._cache.clear()
        if self._stamp is not None:
            self._stamp.close()


@contextlib.contextmanager
def _deferring(storage: SqliteStorage) -> Iterator[None]:
    token = _DEFERRING.set(storage)
    try:
        yield
    finally:
        _DEFERRING.reset(token)


def _copy_outcome(targets: Sequence[asyncio.Future[None]], source: asyncio.Future[None]) -> None:
    """Give each of ``targets`` still waiting the outcome of ``source`` (a done callback)."""
    error = None if source.cancelled() else source.exception()
    for target in targets:
        if target.done():
            continue
        if source.cancelled():
            target.cancel()
        elif error is None:
            target.set_result(None)
        else:
            target.set_exception(StorageError(str(error)))


def _create_private_file(path: str) -> None:
    """Create the database file with mode 0600 unless it exists (or is in-memory); refuse
    a file that is not empty and does not start with SQLite's header (SQLite itself took
    a one-byte file for an empty database and wrote a new one over it)."""
    if path in _MEMORY_PATHS:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open sqlite file: {exc.strerror}") from None
    try:
        header = os.pread(fd, len(_SQLITE_HEADER), 0)
    except OSError as exc:
        raise StorageError(f"cannot read sqlite file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if header and header != _SQLITE_HEADER:
        raise StorageError("sqlite open failed: SQLITE_NOTADB (the file is not a SQLite database)")


def _open_stamp(path: str) -> ChangeStamp:
    try:
        return ChangeStamp(path)
    except OSError as exc:
        raise StorageError(f"cannot open sqlite stamp file: {exc.strerror}") from None


def _verify_settings(conn: sqlite3.Connection) -> None:
    """Refuse a connection whose effective durability settings are weaker than required."""
    journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if journal != "wal":
        raise StorageError(f"sqlite journal_mode is {journal!r}, need 'wal' (durable file)")
    synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    if synchronous < _SYNCHRONOUS_NORMAL:
        raise StorageError(
            f"sqlite synchronous is {synchronous}, need NORMAL (1) or stronger"
            " (commits are fsync'd by WalSync)"
        )


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables of a new file, or check an existing one is ours and of a format
    this code reads (``StorageError`` naming what is wrong, nothing changed)."""
    application = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if application not in (0, _APPLICATION_ID):
        raise StorageError(f"the sqlite file is not a medsecrets database (id {application:#x})")
    if version > _FORMAT:
        raise StorageError(
            f"the sqlite file has format {version}, newer than this medsecrets reads "
            f"({_FORMAT}): run the medsecrets that wrote it, or a newer one"
        )
    kinds = dict(conn.execute(_SCHEMA_KINDS).fetchall())
    if application == _APPLICATION_ID and "kv" not in kinds:
        # never a new, empty table: the server would find an uninitialised store here
        raise StorageError(
            "the sqlite file is a medsecrets database that has no kv table (damaged):"
            " restore it from a backup"
        )
    for statement in _SCHEMA:
        conn.execute(statement)
    for table, expected in _COLUMNS.items():
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()]
        if kinds.get(table, "table") != "table" or columns != expected:
            raise StorageError(f"the sqlite file's {table} table is not a medsecrets one")
    if application == 0 or version != _FORMAT:  # new, or made before files were stamped
        conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {_FORMAT}")
