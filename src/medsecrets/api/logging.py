"""Structured JSON logs of the API: one access line per request, never a value.

Records carry their fields in ``record.fields`` (a dict of JSON scalars);
``JsonFormatter`` renders ``{"time", "level", "logger", "message", **fields}``
on one line. Access lines hold method, route name, status, duration, request
id and remote address: never bodies, tokens, query strings or secret paths.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

__all__ = ["ACCESS_LOGGER", "ERROR_LOGGER", "JsonFormatter", "log_access"]

ACCESS_LOGGER = logging.getLogger("medsecrets.access")
ERROR_LOGGER = logging.getLogger("medsecrets.api")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        return json.dumps(doc, separators=(",", ":"), default=str)


def log_access(
    *,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    request_id: str,
    remote: str,
) -> None:
    """Emit one access line (cheap no-op when the access logger is disabled)."""
    if not ACCESS_LOGGER.isEnabledFor(logging.INFO):
        return
    ACCESS_LOGGER.info(
        "request",
        extra={
            "fields": {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "request_id": request_id,
                "remote": remote,
            }
        },
    )
