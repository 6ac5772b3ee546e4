"""Signals during the start: a clean stop (store closed, audit process ended), never a kill."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx

from medsecrets.testing.serverproc import ServerProcess


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_during_start_up_stops_cleanly(tmp_path: Path) -> None:
    """A SIGTERM once the audit process ran, before the server served, killed the server
    outright (exit -15, store not closed) and the orphaned audit process wrote a traceback
    (BrokenPipeError) into the log. Now the start finishes, nothing is served, the audit
    process is stopped, and the exit is 0."""
    server = ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs")
    server.start(wait=False)
    try:
        audit_process: list[int] = []
        while not audit_process:  # the audit process starts in the middle of the start-up
            assert server.returncode is None, server.log_text()
            audit_process = server.children()
            time.sleep(0.005)
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, server.log_text()
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines()]
    assert lines[-1]["msg"] == "stopped"
    assert not any(_alive(pid) for pid in audit_process)
    server.start()  # the data is whole: the next start serves
    try:
        assert httpx.get(f"{server.addr}/v1/sys/health").status_code == 200
    finally:
        server.stop()
