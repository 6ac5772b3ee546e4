"""Structured logging: one JSON object per line, to stderr or a file.

``configure_logging(level, file=...)`` installs ``JsonFormatter`` on the root
logger and routes the ASGI servers' loggers (granian, uvicorn) through it.

Access lines (``medsecrets.access``, one per request) are buffered and
written in batches (when 64 KiB have gathered, and at least every half
second), so a request pays neither a system call nor a thread switch for its
line; every other record is written at once. ``flush_logging`` (called at
shutdown and at exit) writes what is still buffered. Lines are
rendered by ``medsecrets.logs.JsonFormatter``, which never writes a value.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TextIO

from medsecrets.api.logging import set_access_sink
from medsecrets.logs import log_json

__all__ = ["configure_logging", "flush_logging"]

_ACCESS_LOGGER = "medsecrets.access"


class _BatchedLines(logging.Handler):
    """Buffers formatted lines and writes them through ``target`` in batches.

    A daemon thread flushes at least every ``interval`` seconds, so a quiet
    server's last lines appear promptly; ``close`` flushes and stops it.
    """

    def __init__(
        self, target: logging.StreamHandler[TextIO] | logging.FileHandler, *, limit: int = 65536
    ) -> None:
        super().__init__()
        self.setFormatter(target.formatter)
        self._target = target
        self._limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._buffer_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self.write_line(self.format(record))

    def write_line(self, line: str) -> None:
        """Buffer one finished line (the access-log sink)."""
        with self._buffer_lock:
            self._lines.append(line)
            self._size += len(line) + 1
            full = self._size >= self._limit
        if full:
            self.flush()

    def flush(self) -> None:
        with self._buffer_lock:
            lines, self._lines, self._size = self._lines, [], 0
        stream = self._target.stream
        if lines and stream is not None and not stream.closed:
            self._target.acquire()
            try:
                stream.write("\n".join(lines) + "\n")
                self._target.flush()
            finally:
                self._target.release()

    def _run(self, interval: float = 0.5) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


_batchers: list[_BatchedLines] = []  # the access-line batcher in use, if any


def flush_logging() -> None:
    """Write every buffered access line and stop the flushing thread. Idempotent."""
    while _batchers:
        batcher = _batchers.pop()
        set_access_sink(None)
        logging.getLogger(_ACCESS_LOGGER).removeHandler(batcher)
        batcher.close()


atexit.register(flush_logging)

_SERVER_LOGGERS = (
    "_granian",
    "granian",
    "granian.access",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)


def configure_logging(level: str = "info", *, file: str | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above as JSON lines to ``file`` or stderr
    (``logs.log_json``), access lines batched, the ASGI servers' loggers routed to it.

    Idempotent: replaces the handlers installed by a previous call. Returns the handler.
    """
    handler = log_json(level, file=file)
    assert isinstance(handler, logging.StreamHandler)  # a FileHandler is one too
    _defer_access_lines(handler)
    route_server_loggers()
    return handler


def _defer_access_lines(handler: logging.StreamHandler[TextIO] | logging.FileHandler) -> None:
    flush_logging()
    access = logging.getLogger(_ACCESS_LOGGER)
    batcher = _BatchedLines(handler)
    access.addHandler(batcher)
    access.propagate = False
    _batchers.append(batcher)
    set_access_sink(batcher.write_line if access.isEnabledFor(logging.INFO) else None)


def route_server_loggers() -> None:
    """Make the ASGI servers' loggers propagate to the root JSON handler (call after they
    configure themselves: granian runs ``dictConfig`` when its server is constructed)."""
    for name in _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
