"""The graceful stop of a multi-worker server waits for a worker that exits in time.

granian reaps each worker process from two threads: its watcher thread waits for
the exit, and the stop joins the worker with ``workers_kill_timeout``. When the
watcher's ``waitpid`` took the exit status and had not stored it yet, the stop's
``waitpid`` failed (``ECHILD``), the worker looked alive, and granian logged
"Killing worker-N after it refused to gracefully stop" milliseconds after the
stop began, sending SIGKILL to a process id that was no longer the worker's
(about 1 stop in 10 of a loaded two-worker server).

The test makes that interleaving certain instead of likely, with real worker
processes and granian's own stop: a fault injection (``_SlowReaper``) holds the
watcher thread between its ``waitpid`` and storing the result, until the worker
is killed or a few seconds passed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from typing import Any

import pytest

from medsecrets.server.logsetup import route_server_loggers
from medsecrets.server.runner import reaping_mp_server


def _serve_until_stopped(ready: Event) -> None:
    """A worker's body: sleeps until SIGTERM, then exits 0 (a clean stop)."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ready.set()
    while True:
        time.sleep(1)


def _ignore_sigterm(ready: Event) -> None:
    """A worker's body that refuses to stop."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    while True:
        time.sleep(1)


def _started(server: Any, body: Callable[[Event], None]) -> Any:
    """A started worker of ``server`` running ``body``, its signal handling in place."""
    ready = multiprocessing.get_context("fork").Event()
    worker = server.worker_class(server, 0, body, (ready,))
    worker.start()
    assert ready.wait(60)
    server.wrks = [worker]
    return worker


class _SlowReaper:
    """Fault injection for ``os.waitpid`` (the test's only child is the worker): the
    thread other than the main thread that reaps it (granian's watcher) holds the result
    until ``released`` (or ``hold`` seconds); the main thread's ``waitpid`` waits until
    that reap happened, so it always comes second (and finds ``ECHILD``)."""

    def __init__(self, real: Any, hold: float) -> None:
        self.real = real
        self.hold = hold
        self.reaped = threading.Event()
        self.released = threading.Event()

    def __call__(self, pid: int, flags: int) -> tuple[int, int]:
        if threading.current_thread() is threading.main_thread():
            self.reaped.wait(self.hold)
            return self.real(pid, flags)  # type: ignore[no-any-return]
        result = self.real(pid, flags)
        self.reaped.set()
        self.released.wait(self.hold)
        return result  # type: ignore[no-any-return]


@pytest.fixture
def slow_reaper(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SlowReaper]:
    reaper = _SlowReaper(os.waitpid, hold=3.0)
    monkeypatch.setattr(os, "waitpid", reaper)
    yield reaper
    reaper.released.set()


def test_a_worker_that_stops_in_time_is_not_killed(
    slow_reaper: _SlowReaper, caplog: pytest.LogCaptureFixture
) -> None:
    server_class = reaping_mp_server()
    server = server_class("medsecrets.server.runner:worker_app", workers=1, workers_kill_timeout=60)
    route_server_loggers()  # as the runner does: granian's lines reach the root logger
    worker = _started(server, _serve_until_stopped)
    kills: list[int] = []
    real_kill = worker.kill

    def kill() -> None:
        kills.append(worker.inner.pid)
        slow_reaper.released.set()
        real_kill()

    worker.kill = kill

    with caplog.at_level(logging.INFO, logger="_granian"):
        server._stop_workers()  # type: ignore[no-untyped-call]

    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == []
    assert kills == []
    assert worker.inner.exitcode == 0  # it stopped by itself, cleanly
    assert "Stopped worker-1" in [r.getMessage() for r in caplog.records]


def test_a_worker_that_does_not_stop_is_still_killed(caplog: pytest.LogCaptureFixture) -> None:
    server_class = reaping_mp_server()
    server = server_class("medsecrets.server.runner:worker_app", workers=1, workers_kill_timeout=1)
    route_server_loggers()
    worker = _started(server, _ignore_sigterm)

    with caplog.at_level(logging.INFO, logger="_granian"):
        server._stop_workers()  # type: ignore[no-untyped-call]

    messages = [r.getMessage() for r in caplog.records]
    assert "Killing worker-1 after it refused to gracefully stop" in messages
    assert worker.inner.exitcode == -signal.SIGKILL


def test_a_granian_without_the_watcher_gets_its_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix leans on granian's private worker watcher: a granian without one is served
    by its own ``MPServer`` rather than by a subclass that would fail at the first stop."""
    from granian.server.mp import MPServer, WorkerProcess

    owner = next(c for c in WorkerProcess.__mro__ if "_watcher" in vars(c))
    monkeypatch.delattr(owner, "_watcher")
    assert reaping_mp_server.__wrapped__() is MPServer
