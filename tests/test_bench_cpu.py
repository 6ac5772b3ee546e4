"""``benchmarks.cpu``: the CPU a load cost, per request, from ``/proc``.

The HTTP benchmark reports where each read's CPU goes from two snapshots around a ``wrk``
run: a wrong field, a command name with spaces or parentheses, a child counted that was
not there before, would all give figures that look plausible and are not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchmarks.cpu import CpuSnapshot, per_request, snapshot, stat_ticks

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_ticks_are_user_plus_system_whatever_the_command_name() -> None:
    fields = ["S"] + [str(n) for n in range(4, 53)]  # fields 3 to 52
    fields[14 - 3] = "120"  # utime
    fields[15 - 3] = "7"  # stime
    line = "4242 (a) (b c)) " + " ".join(fields)
    assert stat_ticks(line) == 127


def test_per_request_divides_the_ticks_between_two_snapshots() -> None:
    tick = os.sysconf("SC_CLK_TCK")
    before = CpuSnapshot(loop=10, server=20, children={7: 5, 8: 1}, busy=100, total=400)
    after = CpuSnapshot(
        loop=10 + tick, server=20 + 2 * tick, children={7: 5 + tick, 9: 50}, busy=250, total=700
    )
    share = per_request(before, after, requests=1000)
    assert share.loop_us == pytest.approx(1000.0)  # one second over 1,000 requests
    assert share.server_us == pytest.approx(2000.0)
    assert share.children_us == pytest.approx(1000.0)  # child 9 was not there before: left out
    assert share.idle_percent == pytest.approx(50.0)  # 150 busy of 300 ticks


_SPINNER = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_busy_main_thread_and_a_busy_child_are_told_apart() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        before = snapshot(os.getpid())
        assert before is not None
        assert child.pid in before.children
        child.stdin.write("go\n")
        child.stdin.flush()
        end = time.process_time() + 0.5
        while time.process_time() < end:  # this thread burns 0.5 s of CPU
            pass
        assert child.stdout.readline() == "done\n"  # the child burnt its 0.3 s
        after = snapshot(os.getpid())
        assert after is not None
    finally:
        child.kill()
        child.wait()
    share = per_request(before, after, requests=1)
    # The kernel rounds a thread's ticks and its process's ticks each on its own (utime and
    # stime are scaled per task), so the thread may show a tick or two more than the process.
    two_ticks_us = 2e6 / os.sysconf("SC_CLK_TCK")
    assert 0.4e6 <= share.loop_us <= share.server_us + two_ticks_us
    assert 0.25e6 <= share.children_us <= 0.45e6  # the child's 0.3 s, not ours
    assert 0.0 <= share.idle_percent <= 100.0
