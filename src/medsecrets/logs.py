"""Structured log lines: one JSON object per line, never a secret value.

A line is ``{"ts", "level", "logger", "msg", ...extra}`` where *extra* are the
``extra=`` fields of the call (JSON-safe ones; others as their type name).
Exceptions are logged by type and stack frames, with the message kept only
for medsecrets' own errors (whose messages carry no values by contract); a
foreign exception's message (``ValueError("invalid literal ... 'hunter2'")``)
could quote input, so it is dropped.

A record that carries a ready ``json_line`` (the per-request access lines,
built once by ``medsecrets.api.logging.log_access``) is written as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback
from types import TracebackType
from typing import Final

from medsecrets.errors import MedsecretsError

__all__ = ["LEVELS", "QUIET_LIBRARIES", "JsonFormatter", "log_json", "safe_exception"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""The log levels a setting may name."""

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def safe_exception(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> dict[str, object]:
    """A JSON-ready description of an exception without foreign messages."""
    exc_type, exc, tb = exc_info
    described: dict[str, object] = {"type": f"{exc_type.__module__}.{exc_type.__qualname__}"}
    if isinstance(exc, MedsecretsError):
        described["message"] = exc.message
    described["stack"] = [
        f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(tb)
    ]
    return described


def _jsonable(value: object, depth: int = 0) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth < 4 and isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if depth < 4 and isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    return f"<{type(value).__name__}>"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        ready = record.__dict__.get("json_line")
        if type(ready) is str:
            return ready
        line: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in line:
                line[key] = _jsonable(value)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            if exc is not None:
                line["exception"] = safe_exception((exc_type, exc, tb))
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


QUIET_LIBRARIES: Final = ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer")
"""Loggers kept at WARNING by ``log_json``: at DEBUG they write what they send and receive."""


def log_json(level: str = "info", *, file: str | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above as JSON lines to ``file`` (appended) or
    stderr, through one root handler that replaces the JSON handlers of a previous call.
    The HTTP and AWS client libraries are kept at WARNING whatever ``level`` says
    (``QUIET_LIBRARIES``): at DEBUG ``httpx``/``httpcore`` log request URLs, which may carry
    a token, and ``botocore`` logs KMS request and response bodies, which carry plaintext
    data keys and the seal's root key. Returns the handler."""
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(file, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, JsonFormatter):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
