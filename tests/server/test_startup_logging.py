"""The server's log file: a clear refusal when it cannot be written, 0600 when created."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from medsecrets.testing.serverproc import ServerProcess
from tests.server.conftest import run_server


def test_a_log_file_in_a_missing_directory_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """It was a traceback and 'internal error' (exit 1)."""
    log_file = tmp_path / "no-such-dir" / "server.log"
    done = run_server(["--dev"], env={"MEDSECRETS_LOG_FILE": str(log_file)}, cwd=tmp_path)
    assert done.code == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"medsecrets server: config error: setting 'log_file': cannot open {str(log_file)!r} "
        "for appending (No such file or directory)"
    ]
    assert not (tmp_path / ".medsecrets").exists()  # stopped before anything was set up


def test_a_log_file_that_is_a_directory_stops_the_start_with_one_line(tmp_path: Path) -> None:
    done = run_server(["--dev"], env={"MEDSECRETS_LOG_FILE": str(tmp_path)}, cwd=tmp_path)
    assert done.code == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("medsecrets server: config error: setting 'log_file': cannot open")
    )


def test_the_log_file_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 000 it was 0666: anyone could read it and write lines into it."""
    log_file = tmp_path / "logs" / "server.log"
    log_file.parent.mkdir()
    server = ServerProcess(
        tmp_path / "data", log_dir=tmp_path / "out", env={"MEDSECRETS_LOG_FILE": str(log_file)}
    )
    old = os.umask(0)
    try:
        server.start()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
        assert '"msg":"listening"' in log_file.read_text()
    finally:
        server.stop()


def test_a_log_file_fifo_with_no_reader_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "server.log"
    os.mkfifo(fifo)
    done = run_server(["--dev"], env={"MEDSECRETS_LOG_FILE": str(fifo)}, cwd=tmp_path)
    assert done.code == 2
    assert "setting 'log_file': cannot open" in done.stderr.strip().splitlines()[-1]


def test_the_start_logs_no_warning_that_asks_nothing_of_the_operator(tmp_path: Path) -> None:
    """granian's 'Embedded server is experimental!' was a warning at every start."""
    server = ServerProcess(tmp_path / "data", log_dir=tmp_path / "out")
    server.start()
    try:
        log = server.log_text()
    finally:
        server.stop()
    assert '"msg":"listening"' in log
    assert "experimental" not in log
    granian = [line for line in log.splitlines() if '"logger":"_granian"' in line]
    assert granian, "granian's own start lines still reach the log"
    assert not [line for line in granian if '"level":"warning"' in line]
