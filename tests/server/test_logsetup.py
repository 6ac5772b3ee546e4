"""JSON log lines; exceptions without foreign messages."""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.api.logging import log_access
from medsecrets.errors import NotFoundError
from medsecrets.logs import JsonFormatter
from medsecrets.server.logsetup import (
    _BatchedLines,
    configure_logging,
    flush_logging,
    granian_log_config,
    route_server_loggers,
)


def _record(exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("medsecrets.test", logging.ERROR, __file__, 1, "boom", (), exc_info)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_one_json_object_per_line() -> None:
    line = JsonFormatter().format(_record(path="a/b", fields={"n": 1, "obj": object()}))
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "boom"
    assert data["level"] == "error"
    assert data["logger"] == "medsecrets.test"
    assert data["path"] == "a/b"
    assert data["fields"] == {"n": 1, "obj": "<object>"}


def test_foreign_exception_message_is_dropped() -> None:
    canary = "CANARY-hunter2"
    exc = _raised(ValueError(f"invalid literal for int(): {canary!r}"))
    line = JsonFormatter().format(_record(exc))
    assert canary not in line
    data = json.loads(line)
    assert data["exception"]["type"] == "builtins.ValueError"
    assert data["exception"]["stack"]


def test_own_exception_message_is_kept() -> None:
    exc = _raised(NotFoundError("secret 'a/b/c' not found"))
    data = json.loads(JsonFormatter().format(_record(exc)))
    assert data["exception"]["message"] == "secret 'a/b/c' not found"


def test_configure_logging_writes_json(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    handler = configure_logging("warning")
    try:
        logging.getLogger("medsecrets.x").info("hidden")
        logging.getLogger("medsecrets.x").warning("shown", extra={"count": 2})
        handler.flush()
    finally:
        root.removeHandler(handler)
        root.handlers[:] = before[0]
        root.setLevel(before[1])
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(x["msg"], x["count"]) for x in lines] == [("shown", 2)]


# -- access lines: batched, yet on disk within a second ------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        yield
    finally:
        flush_logging()
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        route_server_loggers()


def _access_line(request_id: str) -> None:
    log_access(
        method="GET",
        route="sys.health",
        status=200,
        duration_ms=0.1,
        request_id=request_id,
        remote="127.0.0.1",
    )


def _wait_for(path: Path, text: str, seconds: float = 30.0) -> bool:
    """Whether ``text`` came into the file at ``path`` within ``seconds`` (a safety net for
    a loaded machine: a line held back for 64 KiB of others never comes)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        time.sleep(0.05)
    return False


def test_granian_s_logging_setup_leaves_the_access_batcher_running(
    tmp_path: Path, restore_logging: None
) -> None:
    """granian runs dictConfig when its server is built: with ``granian_log_config`` it closes
    no handler, and a quiet server's access line is written within the half second."""
    from granian.log import LogLevels
    from granian.log import configure_logging as granian_configure_logging

    log_file = tmp_path / "server.log"
    configure_logging("info", file=str(log_file))
    granian_configure_logging(LogLevels.warning, granian_log_config())
    route_server_loggers()
    assert "access-log" in {thread.name for thread in threading.enumerate()}
    _access_line("after-granian-1")
    assert _wait_for(log_file, "after-granian-1")


def test_a_closed_batcher_writes_each_line_at_once(tmp_path: Path, restore_logging: None) -> None:
    """What a full dictConfig does to every handler (``logging.shutdown``): the batcher's
    thread stops and the log file closes. Later lines are written at once, the file opened
    again, instead of waiting unseen for 64 KiB to gather."""
    log_file = tmp_path / "server.log"
    handler = configure_logging("info", file=str(log_file))
    access = logging.getLogger("medsecrets.access").handlers
    batcher = next(h for h in access if isinstance(h, _BatchedLines))
    logging.shutdown([weakref.ref(batcher), weakref.ref(handler)])
    _access_line("after-shutdown-1")
    assert "after-shutdown-1" in log_file.read_text()  # at once: no thread to wait for
    logging.getLogger("medsecrets.x").warning("still logging")
    assert "still logging" in log_file.read_text()


@pytest.mark.parametrize(
    "env",
    [{}, {"MEDSECRETS_LOG_FILE": "server.log"}, {"MEDSECRETS_WORKERS": "2"}],
    ids=["stderr", "log_file", "workers"],
)
def test_a_server_writes_a_request_s_access_line_promptly(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """One request, then quiet: its access line is in the log within a bounded wait (granian
    had closed the batcher, and lines waited for 64 KiB of them)."""
    import httpx

    from medsecrets.testing.serverproc import ServerProcess

    env = {k: str(tmp_path / v) if k == "MEDSECRETS_LOG_FILE" else v for k, v in env.items()}
    with ServerProcess(tmp_path / "data", env=env, log_dir=tmp_path / "l") as server:
        log = Path(env.get("MEDSECRETS_LOG_FILE", server.log_path))
        response = httpx.get(
            f"{server.addr}/v1/sys/health", headers={"X-Request-Id": "one-quiet-request"}
        )
        assert response.status_code == 200
        assert _wait_for(log, '"request_id":"one-quiet-request"'), log.read_text()[-2000:]
