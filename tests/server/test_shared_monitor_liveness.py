"""The shared monitor process's liveness: a hung one is replaced, and ``stop`` is prompt.

A monitor process that stops turning its loop (hung, or stopped by ``SIGSTOP``)
goes silent on its heartbeat pipe; the server kills it and the usual restart
takes over, so detection resumes. ``stop`` never waits for a process that is
still starting or has gone silent. Real monitor processes, a real server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from medsecrets.catalog import default_catalog
from medsecrets.monitor.detectors import DetectorConfig
from medsecrets.server import monitorprocess
from medsecrets.server.auditprocess import monitor_settings
from medsecrets.server.monitorprocess import MonitorProcess
from medsecrets.testing.serverproc import ServerProcess
from tests.server.test_shared_monitor import DEV_SECRET, Inbox, _audit_records, _link, _read, _wait
from tests.support.procs import live_children

SAFETY_NET = 20.0
"""Seconds a prompt ``stop`` is given in these tests (it used to take 30 s, or 60)."""


def _settings() -> dict[str, object]:
    return monitor_settings(default_catalog(), detectors=DetectorConfig(rate_limit=5))


def _monitor_children() -> list[int]:
    """This process's monitor processes (a zombie ended)."""
    return live_children(b"monitorprocess")


def _stop_in_thread(process: MonitorProcess, timeout: float = 5.0) -> threading.Thread:
    stopper = threading.Thread(target=process.stop, args=(timeout,), daemon=True)
    stopper.start()
    stopper.join(SAFETY_NET)
    return stopper


def test_a_stopped_monitor_process_is_killed_and_started_again() -> None:
    process = MonitorProcess(_settings(), log_level="info", log_file=None, hang_after=2.0)
    process.start()
    inbox = Inbox()
    link = _link(process.address, inbox)
    try:
        _wait(lambda: link.connected, "the link connected")
        hung = process.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        _wait(lambda: process.restarts == 1, "the hung process replaced")
        assert process.hangs == 1 and process.pid != hung
        assert hung not in _monitor_children()  # killed and reaped
        for _ in range(6):
            link.submit(_read("svc-after-hang"))
        _wait(inbox.alerts, "an alert from the new monitor process")
        assert [a["key"] for a in inbox.alerts()] == ["svc-after-hang"]
    finally:
        link.stop()
        process.stop()


def test_stop_is_prompt_while_a_restart_is_under_way(tmp_path: Path) -> None:
    """The restarted process cannot say ``ready`` (it blocks opening its log, a FIFO
    nobody reads): ``stop`` kills it at once. It used to wait for the lock the restart
    held for up to 30 s, the time a start is given."""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the first start opens its log
    process = MonitorProcess(_settings(), log_level="error", log_file=str(fifo))
    try:
        process.start()
    finally:
        os.close(reader)
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    _wait(lambda: [p for p in _monitor_children() if p != first], "a restart under way")
    (starting,) = [p for p in _monitor_children() if p != first]
    stopper = _stop_in_thread(process)
    assert not stopper.is_alive(), "stop waited for the restart"
    assert process.restarts == 0
    assert _monitor_children() == []  # the starting process was killed and reaped
    assert not os.path.exists(os.path.dirname(process.address.socket))
    assert starting not in _monitor_children()


def test_stop_kills_a_silent_monitor_process_at_once() -> None:
    """A hung process will not save the detectors' state: ``stop`` does not give it the
    time it gives one that answers (60 s here)."""
    process = MonitorProcess(_settings(), log_level="info", log_file=None, hang_after=600)
    process.start()
    hung = process.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    time.sleep(monitorprocess._SILENT + 2 * monitorprocess._BEAT)  # it has gone silent
    stopper = _stop_in_thread(process, timeout=60.0)
    assert not stopper.is_alive(), "stop waited for a hung process"
    assert _monitor_children() == []


def test_stop_lets_an_answering_monitor_process_save_its_state(tmp_path: Path) -> None:
    state = tmp_path / "detectors.state"
    settings = monitor_settings(
        default_catalog(), detectors=DetectorConfig(rate_limit=5), state_path=str(state)
    )
    process = MonitorProcess(settings, log_level="info", log_file=None)
    process.start()
    inbox = Inbox()
    link = _link(process.address, inbox)
    try:
        for _ in range(6):
            link.submit(_read("svc-saved"))
        _wait(inbox.alerts, "the alert: the key and events taken")
    finally:
        link.stop()
    state.unlink(missing_ok=True)
    process.stop()
    assert state.exists()


def test_a_two_worker_server_replaces_a_stopped_monitor_process(tmp_path: Path) -> None:
    """SIGSTOP the monitor process of a real two-worker server: it is killed after its
    heartbeats stop (10 s) and started again, and the workers' reads raise alerts again.
    It used to stay stopped for good, every worker dropping its events."""
    data = tmp_path / "data"
    env = {"MEDSECRETS_WORKERS": "2", "MEDSECRETS_MONITOR_RATE_THRESHOLD": "5"}
    with ServerProcess(data, env=env, log_dir=tmp_path / "l") as server:
        workers = server.children()
        (hung,) = [p for p in server.children(monitor=True) if p not in workers]
        os.kill(hung, signal.SIGSTOP)

        def replaced() -> list[int]:
            return [p for p in server.children(monitor=True) if p not in (*workers, hung)]

        _wait(replaced, "a new monitor process", timeout=60)
        assert hung not in server.children(monitor=True)
        root = {"Authorization": f"Bearer {server.token}"}
        created = httpx.post(
            f"{server.addr}/v1/auth/token/create",
            headers=root,
            json={"paths": ["*"], "capabilities": ["read"], "ttl": 600, "display_name": "late"},
        )
        assert created.status_code == 200, created.text
        h = {"Authorization": f"Bearer {created.json()['token']}", "Connection": "close"}

        def alerted() -> bool:
            read = httpx.get(f"{server.addr}/v1/secrets/{DEV_SECRET}", headers=h)
            assert read.status_code == 200
            return any(
                r["kind"] == "alert" and r["alert"]["key"] == "late"  # type: ignore[index]
                for r in _audit_records(data)
            )

        _wait(alerted, "a rate alert after the restart", timeout=60)
        assert "hung" in server.log_text()


def test_a_start_whose_pipe_stop_closed_fails_as_a_start_that_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``stop`` may close the new process's stdin while ``_launch`` writes the config to
    it: that is a start that did not happen (``RuntimeError``), not a ``ValueError``
    escaping the keeper thread with a traceback."""
    real = subprocess.Popen

    def closed_at_once(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started = real(*args, **kwargs)
        assert started.stdin is not None
        started.stdin.close()  # as stop() does, in the instant after Popen
        return started

    monkeypatch.setattr(monitorprocess.subprocess, "Popen", closed_at_once)
    process = MonitorProcess(_settings(), log_level="error", log_file=None)
    with pytest.raises(RuntimeError, match="did not start"):
        process.start()
    assert _monitor_children() == []
