"""``WalSync``: makes a SQLite file's committed transactions durable, many per fsync.

``SqliteStorage`` commits with ``synchronous=NORMAL``: a ``COMMIT`` appends its
frames to the write-ahead log and returns without an fsync, so the file's
write lock is held for microseconds, never across a disk flush. Durability
comes from here: every commit takes a sequence number, and one fsync of the
``-wal`` file covers every commit made before it started (the log is appended
in commit order), so commits waiting together share one. A blocking caller
(``wait(seq)``) makes the fsync itself when none is under way, else waits for
the one under way and then the next (no hand-off to another thread: a single
writer pays one fsync, as with ``synchronous=FULL``); an event loop
(``wait_async(seq)``) has it made by this object's thread and is resolved
through ``call_soon_threadsafe``.

Checkpoints (copying the log back into the database) are this thread's too:
the storage's connections run with ``wal_autocheckpoint=0`` (else the commit
that fills the log would copy ~1,000 pages and fsync twice on the caller's
thread, an event loop's included), and after every ``checkpoint_every``
writes (a commit counts the writes it holds: a group commit many) this thread
calls ``checkpoint`` (a ``PASSIVE`` checkpoint: it never
waits for readers or writers). SQLite keeps checkpoints safe under
``NORMAL``: it fsyncs the log before copying it and the database after, and
the log's header whenever it restarts the log (on the committing thread,
about once every ``checkpoint_every`` writes: the one disk flush a caller's
``COMMIT`` still makes).

Failure is final: when an fsync fails, the page cache can no longer be trusted
to reach the disk (Linux may drop the dirty pages), so every waiting and every
later commit gets the ``StorageError``; the process must reopen the store.

Contract with the caller, whose write transactions are serialised (one at a
time per ``WalSync``): call ``begin()`` right before ``COMMIT`` (from then on
the commit may be visible, so ``pending`` counts it) and ``done(seq)`` right
after ``COMMIT`` returns or fails (from then on its frames are in the file, so
an fsync may cover it); wait with ``wait(seq)``/``wait_async(seq)``. Call
``close()`` once, after the last commit (it makes everything committed
durable first); a commit begun after it raises ``StorageError``.

The ``-wal`` path must be the real one: SQLite puts the log next to the file a
symlinked database path resolves to (``SqliteStorage`` passes
``realpath(database) + "-wal"``). A log that is missing while commits wait
(its connections are open, so SQLite cannot have removed it) is a failure,
not "nothing to sync".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from typing import Final

from medsecrets.errors import StorageError
from medsecrets.loops import running_loop

__all__ = ["WalSync"]

_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
CHECKPOINT_EVERY: Final = 256
"""Writes between two checkpoints: a secret write adds 3 to 4 pages to the log, so
about SQLite's own default of 1,000 pages. Counted in writes, not commits: a
group commit of many writes adds as many pages, and a longer log makes a longer
checkpoint, during which this thread makes no fsync (every waiting write's
latency; measured at 32 concurrent HTTP writes: p99 26 against 56 ms)."""

DATASYNC: Final[Callable[[int], None]] = getattr(os, "fdatasync", os.fsync)
"""The flush: ``fdatasync`` where there is one (as SQLite's own: the log's data and
its size, not its times; half the cost of ``fsync`` on this machine's ext4)."""

_log = logging.getLogger(__name__)


class WalSync:
    """One fsync thread for the ``-wal`` file at ``wal_path`` (see the module docstring).

    ``checkpoint`` (optional) copies the log into the database; it runs on
    this object's thread once ``checkpoint_every`` writes have accumulated,
    and what it raises is logged, never propagated. ``fsync`` is
    a seam for tests (to count flushes or inject ``EIO``).
    """

    def __init__(
        self,
        wal_path: str,
        *,
        checkpoint: Callable[[], None] | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        fsync: Callable[[int], None] = DATASYNC,
    ) -> None:
        self._path = wal_path
        self._checkpoint = checkpoint
        self._checkpoint_every = checkpoint_every
        self._writes = 0  # writes in the commits begun so far (``begin``)
        self._checkpointed = 0  # ``_writes`` when the last checkpoint ran
        self._fsync = fsync
        self._cond = threading.Condition(threading.Lock())
        self._begun = 0  # sequence number of the last commit begun (maybe visible)
        self._committed = 0  # the last commit whose COMMIT returned: an fsync covers it
        self._synced = 0  # every commit up to this one is durable
        self._flushing = False  # an fsync is under way (by a caller or the thread)
        self._error: StorageError | None = None
        self._closed = False
        self._waiters: list[_Waiter] = []
        self._fd = -1
        self._identity = (0, 0)
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"WalSync(path={self._path!r}, committed={self._committed}, synced={self._synced})"

    @property
    def failed(self) -> bool:
        """Whether durability has failed for good (then every wait raises)."""
        return self._error is not None

    @property
    def pending(self) -> int:
        """The last commit begun and not yet durable, or 0 when every one is."""
        begun = self._begun
        return begun if begun > self._synced else 0

    def check(self) -> None:
        """Raise a ``StorageError`` if durability has failed (call before a commit)."""
        if self._error is not None:
            raise self._failure()

    def begin(self, writes: int = 1) -> int:
        """A commit of ``writes`` writes is about to be made visible; its sequence
        number (see the module)."""
        with self._cond:
            if self._closed:
                raise StorageError("storage is closed")
            if self._error is not None:
                raise self._failure()
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="medsecrets-walsync", daemon=True)
                thread.start()
                self._thread = thread
            self._begun += 1
            self._writes += writes
            return self._begun

    def done(self, seq: int) -> None:
        """Commit ``seq`` returned (or failed): its frames are written, an fsync may cover it."""
        with self._cond:
            self._committed = max(self._committed, seq)
            self._cond.notify_all()

    def wait(self, seq: int) -> None:
        """Block until commit ``seq`` is durable, making the fsync here when none is
        under way; raises a ``StorageError`` on failure."""
        flushed: list[_Settled] = []
        try:
            with self._cond:
                while self._synced < seq and self._error is None:
                    if not self._flushing and self._committed >= seq:
                        flushed.append(self._flush_locked())
                    else:
                        self._cond.wait()
                failed = self._synced < seq
        finally:
            for settled in flushed:
                _settle(*settled)
        if failed:
            raise self._failure()

    def wait_async(self, seq: int) -> asyncio.Future[None]:
        """A future of the running loop, done when commit ``seq`` is durable (or failed)."""
        loop = running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._synced >= seq:
                future.set_result(None)
            elif self._error is not None:
                future.set_exception(self._failure())
            else:
                self._waiters.append((seq, loop, future))
                self._cond.notify_all()
        return future

    def _failure(self) -> StorageError:
        """A fresh error for each caller (a shared one would pile up their tracebacks)."""
        return StorageError(str(self._error))

    def close(self) -> None:
        """Make every commit durable, stop the thread and close the descriptor. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- flushing -----------------------------------------------------------

    def _flush_locked(self) -> _Settled:
        """One fsync covering every commit done so far, made with ``_cond`` held on entry
        and exit (released meanwhile); the async waiters it settles, for ``_settle``."""
        self._flushing = True
        target = self._committed
        error: StorageError | None = None
        self._cond.release()
        try:
            self._flush()
        except OSError as exc:  # the errno's standard text only, never the message
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            error = StorageError(
                f"sqlite write-ahead log fsync failed ({reason}): writes since the last"
                " good fsync have an unknown outcome; no further writes, reopen the store"
            )
        except BaseException:  # an interrupt in the caller: no flush made, the next one retries
            self._cond.acquire()
            self._flushing = False
            self._cond.notify_all()
            raise
        self._cond.acquire()
        self._flushing = False
        if error is None:
            self._synced = max(self._synced, target)
        else:
            self._error = error
        settled = [w for w in self._waiters if error is not None or w[0] <= self._synced]
        self._waiters = [w for w in self._waiters if error is None and w[0] > self._synced]
        self._cond.notify_all()
        return settled, None if error is None else str(error)

    def _run(self) -> None:
        """The thread: fsyncs for event loops' waiters (and the last one at close), and
        checkpoints every ``checkpoint_every`` writes."""
        while True:
            checkpoint = False
            settled: _Settled | None = None
            with self._cond:
                while True:
                    if self._error is not None:
                        return
                    if (
                        not self._flushing
                        and self._synced < self._committed
                        and (self._waiters or self._closed)
                    ):
                        settled = self._flush_locked()
                        break
                    if (
                        self._checkpoint is not None
                        and self._writes - self._checkpointed >= self._checkpoint_every
                    ):
                        self._checkpointed = self._writes
                        checkpoint = True
                        break
                    if (
                        self._closed
                        and not self._flushing
                        and self._synced >= self._committed >= self._begun
                    ):
                        return  # closed, and nothing left to sync
                    self._cond.wait()
            if settled is not None:
                _settle(*settled)
            if checkpoint:
                self._run_checkpoint()

    def _run_checkpoint(self) -> None:
        assert self._checkpoint is not None
        try:
            self._checkpoint()
        except StorageError as exc:  # its message names SQLite's error only
            _log.error("sqlite checkpoint failed (the log grows until one works): %s", exc)
        except Exception as exc:
            _log.error("sqlite checkpoint failed: %s", type(exc).__name__)

    def _flush(self) -> None:
        """fsync the ``-wal`` file, (re)opening it when its inode changed; none: nothing."""
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            # Open connections keep the log; only one closed by someone else is gone.
            raise OSError(errno.ENOENT, "the write-ahead log vanished") from None
        identity = (info.st_dev, info.st_ino)
        if self._fd < 0 or identity != self._identity:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._fd = os.open(self._path, _OPEN_FLAGS)
            self._identity = identity
        self._fsync(self._fd)


_Waiter = tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]
_Settled = tuple[list[_Waiter], str | None]  # the waiters an fsync settled, its error text


def _settle(waiters: list[_Waiter], error: str | None) -> None:
    """Resolve ``waiters`` on their loops: one thread-safe call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures, error)


def _resolve(futures: list[asyncio.Future[None]], error: str | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(StorageError(error))  # one instance per waiter
