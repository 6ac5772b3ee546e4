"""A stop signal that reaches a granian worker while it is still starting is not lost.

A forked worker inherits the server's SIGTERM/SIGINT handler until granian installs its
own, after the worker's app is built; that handler only set the worker's copy of the
server's flag, so the worker served on until the server killed it at
``shutdown_grace_period``. ``ReapingMPServer`` remembers the stop in a worker, and the
app granian runs (``runner._StopAware``) sends it again once granian's handlers are in
place. The last test does it with a real two-worker server whose workers start slowly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from medsecrets.server import runner
from medsecrets.server.runner import reaping_mp_server
from tests.support.hooked_server import MARK, start_hooked


@pytest.fixture(autouse=True)
def _no_pending_stop() -> Iterator[None]:
    runner._PENDING_STOP.clear()
    yield
    runner._PENDING_STOP.clear()


def _server(pid: int) -> object:
    server = object.__new__(reaping_mp_server())
    server.pid = pid  # type: ignore[attr-defined]
    server.main_loop_interrupt = threading.Event()  # type: ignore[attr-defined]
    server.interrupt_signal = False  # type: ignore[attr-defined]
    return server


def test_in_a_worker_the_inherited_handler_remembers_the_stop() -> None:
    server = _server(pid=os.getpid() + 1)  # the server's pid: this is a worker
    server.signal_handler_interrupt(signal.SIGTERM, None)  # type: ignore[attr-defined]
    assert runner._PENDING_STOP == [True]
    assert server.interrupt_signal is False  # type: ignore[attr-defined]


def test_in_the_server_the_handler_stops_the_server() -> None:
    server = _server(pid=os.getpid())
    server.signal_handler_interrupt(signal.SIGTERM, None)  # type: ignore[attr-defined]
    assert runner._PENDING_STOP == []
    assert server.interrupt_signal is True  # type: ignore[attr-defined]
    assert server.main_loop_interrupt.is_set()  # type: ignore[attr-defined]


class _App:
    async def __call__(self, scope: object, receive: object, send: object) -> None:
        return None

    async def __rsgi__(self, scope: object, protocol: object) -> None:
        return None


class _Granian:
    """A stand-in for granian's SIGTERM handler (it keeps each signal in ``got``), in place
    for the ``with`` block, and a new event loop (``loop``), closed at its end."""

    def __init__(self) -> None:
        self.got: list[int] = []

        def handler(signum: int, frame: FrameType | None) -> None:
            self.got.append(signum)

        self.handler = handler

    def __enter__(self) -> _Granian:
        self.previous = signal.signal(signal.SIGTERM, self.handler)
        self.loop = asyncio.new_event_loop()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.close()
        signal.signal(signal.SIGTERM, self.previous)

    def run_loop(self) -> None:
        """Let the loop run a moment, then wait (5 s at most) for a signal to arrive."""
        self.loop.run_until_complete(asyncio.sleep(0.05))
        deadline = time.monotonic() + 5
        while not self.got and time.monotonic() < deadline:
            time.sleep(0.01)


def test_a_remembered_stop_is_sent_again_once_granian_handles_signals() -> None:
    with _Granian() as granian:
        app = runner._StopAware(_App())  # type: ignore[arg-type]
        app.__rsgi_init__(granian.loop)
        assert granian.got == []  # no stop pending: nothing sent
        runner._PENDING_STOP.append(True)
        app.__rsgi_init__(granian.loop)
        assert granian.got == []  # sent once the loop runs (granian's server serving by then)
        granian.run_loop()
        assert granian.got == [signal.SIGTERM]


def test_a_stop_after_granian_handles_signals_and_before_its_loop_runs_is_not_lost() -> None:
    """granian's loop (uvloop) drops a signal that comes while it does not run, and it runs
    only once granian serves: from ``__rsgi_init__`` until then the stop is remembered, and
    granian's handler is back (and gets it) once the loop runs."""
    with _Granian() as granian:
        runner._StopAware(_App()).__rsgi_init__(granian.loop)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)  # the loop does not run yet
        assert runner._PENDING_STOP == [True]
        assert granian.got == []
        granian.run_loop()
        assert granian.got == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is granian.handler


SLOW_START = (
    MARK
    + """
import time
import medsecrets.server.runner as runner

_real = runner._create_app


def _slow(settings, *, worker=False, **kwargs):
    if worker:
        mark("worker")
        time.sleep(3)
    return _real(settings, worker=worker, **kwargs)


runner._create_app = _slow
"""
)


def test_a_two_worker_server_stopped_while_its_workers_start_stops_them_gracefully(
    tmp_path: Path,
) -> None:
    """The workers take 3 s to build their apps; the server gets SIGTERM while they do.
    With the stop lost, each served on until killed at the 60 s grace period; now the
    server exits as soon as they have started and stopped."""
    server = start_hooked(tmp_path, SLOW_START)
    try:
        server.wait_marks("worker-", 2)  # both workers are building their apps
        server.process.send_signal(signal.SIGTERM)
        # bounded wait far below the 60 s grace period: a lost stop waits for all of it
        assert server.process.wait(timeout=30) == 0
    finally:
        server.kill()
    text = server.text()
    assert "refused to gracefully stop" not in text
    assert text.count("the stop came while this worker started") == 2
