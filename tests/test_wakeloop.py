"""``WakeOnSleepLoop``: other threads' callbacks always run, and wake the loop only while it
sleeps, once a sleep.

A real loop, real threads and its real self-pipe: the writes to the pipe are counted by
wrapping asyncio's own ``_write_to_self`` on the instance under test.
"""

from __future__ import annotations

import asyncio
import selectors
import threading
import time
from asyncio import selector_events
from collections.abc import Iterator

import pytest

from medsecrets.wakeloop import WakeOnSleepLoop, new_loop


@pytest.fixture
def loop() -> Iterator[WakeOnSleepLoop]:
    made = WakeOnSleepLoop()
    yield made
    made.close()


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bytes go to a loop's self-pipe (asyncio's own ``_write_to_self`` counted)."""
    count = [0]
    write = selector_events.BaseSelectorEventLoop._write_to_self

    def counted(self: selector_events.BaseSelectorEventLoop) -> None:
        count[0] += 1
        write(self)

    monkeypatch.setattr(selector_events.BaseSelectorEventLoop, "_write_to_self", counted)
    return count


def test_a_sleeping_loop_is_woken_by_another_thread_once_for_many_callbacks(
    loop: WakeOnSleepLoop, written: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sleep, 101 callbacks from a thread: one byte. The woken loop is held inside
    ``select`` (still marked asleep) until the thread has queued them all, so the count
    does not depend on how the machine schedules the two threads."""
    ran: list[int] = []
    pushing, pushed = threading.Event(), threading.Event()
    select = selectors.DefaultSelector.select

    def held(
        self: selectors.BaseSelector, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        ready = select(self, timeout)  # type: ignore[arg-type]
        if ready and pushing.is_set():
            pushed.wait(5)  # woken by the first callback: stay asleep until the last
        return ready

    monkeypatch.setattr(selectors.DefaultSelector, "select", held)

    async def main() -> None:
        answered = loop.create_future()

        def from_thread() -> None:
            time.sleep(0.2)  # the loop sleeps in select by now, for up to 10 s
            pushing.set()
            for number in range(100):
                loop.call_soon_threadsafe(ran.append, number)
            loop.call_soon_threadsafe(answered.set_result, None)
            pushed.set()

        thread = threading.Thread(target=from_thread)
        thread.start()
        await asyncio.wait_for(answered, 10)
        thread.join()

    started = time.monotonic()
    loop.run_until_complete(main())
    assert time.monotonic() - started < 5  # woken, not timed out
    assert ran == list(range(100))
    assert written[0] == 1  # once a sleep, not once a callback (101)


def test_callbacks_from_a_thread_while_the_loop_is_busy_write_nothing_and_still_run(
    loop: WakeOnSleepLoop, written: list[int]
) -> None:
    ran: list[int] = []
    started, finished = threading.Event(), threading.Event()

    def from_thread() -> None:
        started.wait(5)
        for number in range(50):
            loop.call_soon_threadsafe(ran.append, number)
        finished.set()

    def busy() -> None:  # a callback that keeps the loop running until the thread is done
        started.set()
        while not finished.wait(0.001):
            pass

    async def main() -> None:
        thread = threading.Thread(target=from_thread)
        thread.start()
        loop.call_soon(busy)
        await asyncio.sleep(0)  # busy() runs in this iteration
        await asyncio.sleep(0)
        for _ in range(10):
            if len(ran) == 50:
                break
            await asyncio.sleep(0.01)
        thread.join()

    before = written[0]
    loop.run_until_complete(main())
    assert ran == list(range(50))
    assert written[0] == before  # the loop was not asleep: no byte, no wake-up


def test_a_handle_queued_just_before_the_loop_sleeps_is_not_slept_on(
    loop: WakeOnSleepLoop,
) -> None:
    """The last look at the ready queue: select with a long timeout returns at once when a
    handle is already queued (queued by a thread that saw the loop awake, so it wrote
    nothing)."""
    loop.call_soon(lambda: None)  # in the ready queue, the loop not sleeping: no write
    selector = loop._selector  # type: ignore[attr-defined]
    started = time.monotonic()
    selector.select(10.0)
    assert time.monotonic() - started < 1.0
    assert not loop._sleeping


def test_no_callback_is_lost_under_a_stream_from_threads(loop: WakeOnSleepLoop) -> None:
    """Threads hammer the loop while it alternates between work and sleep: every callback
    runs, promptly."""
    total = 20_000
    seen = [0]
    all_in = asyncio.Event()

    def bump() -> None:
        seen[0] += 1
        if seen[0] == total:
            all_in.set()

    def sender(count: int) -> None:
        for number in range(count):
            loop.call_soon_threadsafe(bump)
            if number % 500 == 0:
                time.sleep(0.001)  # let the loop fall asleep now and then

    async def main() -> None:
        threads = [threading.Thread(target=sender, args=(total // 4,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.wait_for(all_in.wait(), timeout=30)  # a lost wake-up hangs here
        for thread in threads:
            thread.join()

    loop.run_until_complete(main())
    assert seen[0] == total


def test_the_loop_runs_as_asyncio_loops_do() -> None:
    async def work() -> int:
        await asyncio.sleep(0.01)
        return await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2, 3])

    with asyncio.Runner(loop_factory=new_loop) as runner:
        assert runner.run(work()) == 6
        assert isinstance(runner.get_loop(), WakeOnSleepLoop)
