"""The audit process's CPU priority (``audit.priority``, ``RemoteLane(idle=True)``).

Real audit processes, real scheduling: an idle-priority lane's processes run under
``SCHED_IDLE``; one starved by CPU hogs on its CPU (real busy processes, pinned there) is
found starved from its run-queue wait and put back to the normal policy, or restarted at
normal priority where it cannot be; a process waiting on something else is not starved.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.audit import remote as remote_module
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.priority import Starvation, is_idle, make_idle, schedule_state
from medsecrets.audit.record import AuditEvent
from medsecrets.audit.remote import RemoteLane
from medsecrets.audit.sidecar import LaneConfig
from medsecrets.audit.waiter import Waiter

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE") or schedule_state(os.getpid()) is None,
    reason="needs SCHED_IDLE and /proc/<pid>/schedstat (Linux)",
)

MATERIAL = (b"p" * 32, CheckpointSigner.generate().private_bytes())
CPU = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0


def _event(number: int) -> AuditEvent:
    return AuditEvent(
        kind="request",
        time=dt.datetime.now(dt.UTC),
        request_id=f"req-{number}",
        principal="svc",
        token="tok-priority-0123456789",
        auth="token",
        remote="10.0.0.1",
        operation="secrets.write",
        path="medessence/development/auth",
        environment="development",
        category="auth",
    )


def _lane(tmp_path: Path, **options: object) -> RemoteLane:
    config = LaneConfig(
        name="file", path=str(tmp_path / "audit.jsonl"), node="n1", max_bytes=0, timeout=5.0
    )
    return RemoteLane(config, key_material=lambda name: MATERIAL, **options)  # type: ignore[arg-type]


def _write(lane: RemoteLane, number: int, seconds: float = 10.0) -> bool:
    """Append event ``number``, wait for its answer while the lane's watchdog ticks (a
    lane has none of its own: the broker's calls ``check_hung``), and say whether it is
    durable."""
    waiter = Waiter(1)
    lane.append(_event(number), waiter)
    deadline = time.monotonic() + seconds
    while waiter.result is None and time.monotonic() < deadline:
        lane.check_hung(time.monotonic())
        time.sleep(0.05)
    return waiter.result is True


def _policy(pid: int) -> int:
    return os.sched_getscheduler(pid)


def _can_promote() -> bool:
    """Whether this user may take a process out of ``SCHED_IDLE`` (root, ``CAP_SYS_NICE``
    or an ``RLIMIT_NICE`` that allows it)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
        os.sched_setscheduler(child.pid, os.SCHED_OTHER, os.sched_param(0))
    except PermissionError:
        return False
    finally:
        child.kill()
        child.wait()
    return True


@pytest.fixture
def hogs() -> Iterator[None]:
    """Two busy processes at normal priority on ``CPU``, the CPU the lanes below use."""
    code = f"import os; os.sched_setaffinity(0, {{{CPU}}})\nwhile True: pass"
    started = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    time.sleep(0.3)  # pinned and spinning
    yield
    for hog in started:
        hog.kill()
        hog.wait()


def _wait_for_restart(lane: RemoteLane, dead: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while (lane._process is dead or not lane.up) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_an_idle_lane_runs_its_audit_process_and_its_restarts_under_sched_idle(
    tmp_path: Path,
) -> None:
    lane = _lane(tmp_path, idle=True)
    lane.start()
    try:
        assert _write(lane, 0)
        process = lane._process
        assert process is not None and _policy(process.pid) == os.SCHED_IDLE
        process.kill()
        process.wait()
        _wait_for_restart(lane, process)
        assert _write(lane, 1)
        again = lane._process
        assert again is not None and again is not process
        assert _policy(again.pid) == os.SCHED_IDLE
    finally:
        lane.stop()
    assert _policy(0) == os.SCHED_OTHER  # this process was left alone


def test_a_lane_at_normal_priority_leaves_the_policy_alone(tmp_path: Path) -> None:
    lane = _lane(tmp_path)
    lane.start()
    try:
        assert _write(lane, 0)
        assert lane._process is not None and _policy(lane._process.pid) == os.SCHED_OTHER
    finally:
        lane.stop()


def test_an_audit_process_whose_policy_cannot_be_set_still_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    lane = _lane(tmp_path, idle=True)
    lane.start()
    try:
        assert _write(lane, 0)
        assert lane.up and lane.records == 1
        assert lane._starvation is None  # not idle: nothing to watch
    finally:
        lane.stop()
    assert "cannot lower the audit process's priority (PermissionError)" in caplog.text


def test_make_idle_changes_nothing_where_the_schedule_state_cannot_be_read() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        child.kill()
        child.wait()  # reaped: its /proc entry is gone
        assert schedule_state(child.pid) is None
        assert make_idle(child.pid) is False
    finally:
        child.kill()


@pytest.mark.usefixtures("hogs")
def test_a_starved_idle_process_is_put_back_to_the_normal_policy_and_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not _can_promote():
        pytest.skip("this user may not take a process out of SCHED_IDLE (see the next test)")
    lane = _lane(tmp_path, idle=True, cpus=frozenset({CPU}))
    lane.start()
    try:
        process = lane._process
        assert process is not None and _policy(process.pid) == os.SCHED_IDLE
        deadline = time.monotonic() + 15
        number = 0
        while _policy(process.pid) == os.SCHED_IDLE and time.monotonic() < deadline:
            assert _write(lane, number)  # answered well within the 5 s timeout
            number += 1
        assert _write(lane, number)
        assert lane._process is process  # the same process, promoted
        assert _policy(process.pid) == os.SCHED_OTHER
        assert lane.failures == 0
    finally:
        lane.stop()
    assert "was starved for CPU under SCHED_IDLE" in caplog.text


@pytest.mark.usefixtures("hogs")
def test_a_starved_process_that_cannot_be_promoted_is_restarted_at_normal_priority(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(pid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(remote_module, "make_normal", refuse)
    lane = _lane(tmp_path, idle=True, cpus=frozenset({CPU}))
    lane.start()
    try:
        process = lane._process
        assert process is not None
        results: list[bool] = []
        deadline = time.monotonic() + 15
        while lane._process is process and time.monotonic() < deadline:
            results.append(_write(lane, len(results), seconds=4.0))
        _wait_for_restart(lane, process)
        again = lane._process
        assert again is not None and again is not process
        assert _policy(again.pid) == os.SCHED_OTHER
        assert _write(lane, len(results))
    finally:
        lane.stop()
    assert "cannot be given the normal policy (PermissionError)" in caplog.text
    assert False in results, results  # what it held was lost, as for any loss
    assert lane.failures >= 1


def _verdicts(
    watch: Starvation, *, late: bool, seconds: float, until_true: bool = False
) -> list[bool]:
    """``watch.check`` every 50 ms for ``seconds`` (or until it says starved)."""
    verdicts: list[bool] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds and not (until_true and any(verdicts)):
        verdicts.append(watch.check(time.monotonic(), late=late))
        time.sleep(0.05)
    return verdicts


def test_a_process_that_sleeps_is_late_but_not_starved() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not any(_verdicts(Starvation(child.pid), late=True, seconds=1.0))
    finally:
        child.kill()
        child.wait()


@pytest.mark.usefixtures("hogs")
def test_a_busy_idle_process_among_hogs_is_starved_and_not_once_on_time() -> None:
    code = f"import os; os.sched_setaffinity(0, {{{CPU}}})\nwhile True: pass"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.2)
        assert make_idle(child.pid) and is_idle(child.pid)
        watch = Starvation(child.pid)
        # never starved while its answers are on time; starved soon once one is late
        assert not any(_verdicts(watch, late=False, seconds=0.6))
        assert any(_verdicts(watch, late=True, seconds=3.0, until_true=True))
    finally:
        child.kill()
        child.wait()
