"""The API's log lines: one access line per request, never a value.

Access lines hold method, route name, status, duration, request id and remote
address: never bodies, tokens, query strings or secret paths. The line is
rendered here, once. A server installs a *sink* (``set_access_sink``) that
takes the finished line, so a request pays for neither the logging machinery
nor a system call; without a sink the line goes to the ``medsecrets.access``
logger as a record carrying ``json_line`` (``medsecrets.logs``) and its fields.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

__all__ = ["ACCESS_LOGGER", "ERROR_LOGGER", "log_access", "set_access_sink"]

ACCESS_LOGGER = logging.getLogger("medsecrets.access")
ERROR_LOGGER = logging.getLogger("medsecrets.api")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SECOND: list[tuple[int, str]] = [(-1, "")]  # (second, its ISO text): one strftime a second


def _stamp(now: float) -> str:
    second = int(now)
    cached = _SECOND[0]
    if cached[0] != second:
        cached = _SECOND[0] = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1000):03d}Z"


_sinks: list[Callable[[str], None]] = []


def set_access_sink(sink: Callable[[str], None] | None) -> None:
    """Send access lines to ``sink`` (``None``: back to the logger)."""
    _sinks.clear()
    if sink is not None:
        _sinks.append(sink)


def log_access(
    *,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    request_id: str,
    remote: str,
) -> None:
    """Emit one access line (to the sink, else to the logger if it is enabled)."""
    if not _sinks and not ACCESS_LOGGER.isEnabledFor(logging.INFO):
        return
    # Escaping only for an unusual method: route names are identifiers, request ids
    # [A-Za-z0-9-], remote an IP address (a transport's client address text).
    if method not in _METHODS:
        method = json.dumps(method)[1:-1]
    line = (
        f'{{"ts":"{_stamp(time.time())}","level":"info","logger":"medsecrets.access",'
        f'"msg":"request","method":"{method}","route":"{route}","status":{status},'
        f'"duration_ms":{duration_ms:.3f},"request_id":"{request_id}","remote":"{remote}"}}'
    )
    if _sinks:
        _sinks[0](line)
        return
    fields = {
        "json_line": line,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration_ms, 3),
        "request_id": request_id,
        "remote": remote,
    }
    # makeRecord + handle: Logger.info would also walk the stack to find the caller.
    record = ACCESS_LOGGER.makeRecord(
        ACCESS_LOGGER.name, logging.INFO, __file__, 0, "request", (), None, extra=fields
    )
    ACCESS_LOGGER.handle(record)
