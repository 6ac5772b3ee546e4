"""``WalSync``: makes a SQLite file's committed transactions durable, many per fsync.

``SqliteStorage`` commits with ``synchronous=NORMAL``: a ``COMMIT`` appends its
frames to the write-ahead log and returns without an fsync, so the file's
write lock is held for microseconds, never across a disk flush. Durability
comes from here: every commit takes a sequence number (``committed``), and
one thread fsyncs the ``-wal`` file whenever commits wait, so one fsync covers
every commit made before it started (the log is appended in commit order).
A caller learns that its commit is durable with ``wait(seq)`` (blocking) or
``wait_async(seq)`` (an event loop; resolved through ``call_soon_threadsafe``).

Checkpoints (copying the log back into the database) are this thread's too:
the storage's connections run with ``wal_autocheckpoint=0`` (else the commit
that fills the log would copy ~1,000 pages and fsync twice on the caller's
thread, an event loop's included), and after every ``checkpoint_every``
commits this thread calls ``checkpoint`` (a ``PASSIVE`` checkpoint: it never
waits for readers or writers). SQLite keeps checkpoints safe under
``NORMAL``: it fsyncs the log before copying it and the database after. A
``-wal`` file that is gone was checkpointed and removed when the last
connection closed, which leaves nothing to sync.

Failure is final: when an fsync fails, the page cache can no longer be trusted
to reach the disk (Linux may drop the dirty pages), so every waiting and every
later commit gets the ``StorageError``; the process must reopen the store.

Contract with the caller: call ``committed()`` after each successful
``COMMIT`` and before waiting on it; call ``close()`` once, after the last
commit (it makes everything committed durable first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Final

from medsecrets.errors import StorageError

__all__ = ["WalSync"]

_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
CHECKPOINT_EVERY: Final = 256
"""Commits between two checkpoints: a secret write adds 3 to 4 pages to the log,
so about SQLite's own default of 1,000 pages."""

_log = logging.getLogger(__name__)


class WalSync:
    """One fsync thread for the ``-wal`` file at ``wal_path`` (see the module docstring).

    ``checkpoint`` (optional) copies the log into the database; it runs on
    this thread after an fsync once ``checkpoint_every`` commits have
    accumulated, and what it raises is logged, never propagated. ``fsync`` is
    a seam for tests (to count flushes or inject ``EIO``).
    """

    def __init__(
        self,
        wal_path: str,
        *,
        checkpoint: Callable[[], None] | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self._path = wal_path
        self._checkpoint = checkpoint
        self._checkpoint_every = checkpoint_every
        self._checkpointed = 0  # the commit after which the last checkpoint ran
        self._fsync = fsync
        self._cond = threading.Condition(threading.Lock())
        self._committed = 0  # sequence number of the last commit
        self._synced = 0  # every commit up to this one is durable
        self._error: StorageError | None = None
        self._closed = False
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._fd = -1
        self._identity = (0, 0)
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"WalSync(path={self._path!r}, committed={self._committed}, synced={self._synced})"

    @property
    def error(self) -> StorageError | None:
        """The failure that ended durability, if any (then every wait raises it)."""
        return self._error

    @property
    def pending(self) -> int:
        """The last commit not yet durable, or 0 when every commit is."""
        committed = self._committed
        return committed if committed > self._synced else 0

    def check(self) -> None:
        """Raise the final ``StorageError`` if durability has failed (before a commit)."""
        if self._error is not None:
            raise self._error

    def committed(self) -> int:
        """Record one more commit; its sequence number, for ``wait``/``wait_async``."""
        with self._cond:
            self._committed += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="medsecrets-walsync", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
            return self._committed

    def wait(self, seq: int) -> None:
        """Block until commit ``seq`` is durable; raises the ``StorageError`` of a failure."""
        with self._cond:
            while self._synced < seq and self._error is None:
                self._cond.wait()
            if self._synced < seq and self._error is not None:
                raise self._error

    def wait_async(self, seq: int) -> asyncio.Future[None]:
        """A future of the running loop, done when commit ``seq`` is durable (or failed)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._synced >= seq:
                future.set_result(None)
            elif self._error is not None:
                future.set_exception(self._error)
            else:
                self._waiters.append((seq, loop, future))
                self._cond.notify_all()
        return future

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

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._synced >= self._committed and not self._closed:
                    self._cond.wait()
                if self._synced >= self._committed or self._error is not None:
                    return  # closed, and nothing left to sync (or nothing can be)
                target = self._committed
            error: StorageError | None = None
            try:
                self._flush()
            except OSError as exc:  # the errno's standard text only, never the message
                reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
                error = StorageError(
                    f"sqlite write-ahead log fsync failed ({reason}):"
                    " no further writes; reopen the store"
                )
            with self._cond:
                if error is None:
                    self._synced = target
                else:
                    self._error = error
                settled = [w for w in self._waiters if error is not None or w[0] <= target]
                self._waiters = [w for w in self._waiters if error is None and w[0] > target]
                self._cond.notify_all()
            _settle(settled, error)
            if error is not None:
                return
            if (
                self._checkpoint is not None
                and target - self._checkpointed >= self._checkpoint_every
            ):
                self._checkpointed = target
                try:
                    self._checkpoint()
                except Exception as exc:  # the log keeps growing until one succeeds
                    _log.warning("sqlite checkpoint failed: %s", type(exc).__name__)

    def _flush(self) -> None:
        """fsync the ``-wal`` file, (re)opening it when its inode changed; none: nothing."""
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return  # checkpointed and removed with the last connection
        identity = (info.st_dev, info.st_ino)
        if self._fd < 0 or identity != self._identity:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._fd = os.open(self._path, _OPEN_FLAGS)
            self._identity = identity
        self._fsync(self._fd)


def _settle(
    waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]],
    error: StorageError | None,
) -> None:
    """Resolve ``waiters`` on their loops: one thread-safe call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures, error)


def _resolve(futures: list[asyncio.Future[None]], error: StorageError | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
