"""JSON log lines; exceptions without foreign messages."""

from __future__ import annotations

import json
import logging

import pytest

from medsecrets.errors import NotFoundError
from medsecrets.logs import JsonFormatter
from medsecrets.server.logsetup import configure_logging


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
