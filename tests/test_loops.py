"""``running_loop()`` answers as ``asyncio.get_running_loop()`` does, in every case."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from medsecrets.loops import running_loop, running_loop_or_none


def test_outside_a_loop_it_raises_as_asyncio_does() -> None:
    with pytest.raises(RuntimeError):
        running_loop()
    assert running_loop_or_none() is None


def test_each_loop_in_turn_on_one_thread_is_its_own() -> None:
    async def which() -> tuple[asyncio.AbstractEventLoop, ...]:
        return running_loop(), running_loop(), asyncio.get_running_loop()

    first = asyncio.run(which())
    second = asyncio.run(which())  # a new loop on the same thread: never the old one
    assert first[0] is first[1] is first[2]
    assert second[0] is second[1] is second[2]
    assert first[0] is not second[0]
    with pytest.raises(RuntimeError):  # the last loop stopped: nothing runs here now
        running_loop()


def test_a_loop_running_on_another_thread_is_not_this_threads() -> None:
    started, done = threading.Event(), threading.Event()
    seen: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        seen.append(running_loop())
        started.set()
        while not done.is_set():
            await asyncio.sleep(0.001)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert started.wait(5)
        assert running_loop_or_none() is None  # its loop is remembered, but not ours

        async def here() -> asyncio.AbstractEventLoop:
            return running_loop()

        mine = asyncio.run(here())
        assert mine is not seen[0]
    finally:
        done.set()
        thread.join()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_after_fork_does_not_inherit_the_loop() -> None:
    async def fork_inside() -> int:
        running_loop()  # remembered in the parent
        pid = os.fork()
        if pid == 0:  # the child: its copy of the loop is not running here
            os._exit(0 if running_loop_or_none() is None else 1)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert asyncio.run(fork_inside()) == 0
