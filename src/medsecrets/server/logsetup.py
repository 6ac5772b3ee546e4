"""Structured logging: one JSON object per line, to stderr or a file.

``configure_logging(level, file=...)`` installs ``JsonFormatter`` on the root
logger and routes the ASGI servers' loggers (granian, uvicorn) through it.

Access lines (``medsecrets.access``, one per request) are buffered and
written in batches (when 64 KiB have gathered, and at least every half
second), so a request pays neither a system call nor a thread switch for its
line; every other record is written at once. ``flush_logging`` (called at
shutdown and at exit) writes what is still buffered. Lines are
rendered by ``medsecrets.logs.JsonFormatter``, which never writes a value.

granian configures logging when its server is constructed (``dictConfig``,
which closes every handler there is: the batcher's flushing thread too). Its
servers get ``GRANIAN_LOG_CONFIG`` (``log_dictconfig``), an incremental
configuration that closes nothing; and a batcher closed anyway (a
``logging.shutdown`` elsewhere) writes each later line at once instead of
gathering them unseen.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import Final, TextIO

from medsecrets.api.logging import set_access_sink
from medsecrets.errors import ConfigError
from medsecrets.logs import log_json

__all__ = ["configure_logging", "flush_logging", "granian_log_config", "route_server_loggers"]

_ACCESS_LOGGER = "medsecrets.access"


class _BatchedLines(logging.Handler):
    """Buffers formatted lines and writes them through ``target`` in batches.

    A daemon thread flushes at least every ``interval`` seconds, so a quiet
    server's last lines appear promptly; ``close`` flushes and stops it, and
    every line written after that is written at once (a closed batcher has no
    thread left to flush it). A ``FileHandler`` target closed meanwhile is
    opened again, as its own ``emit`` would.
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
        self._closed = False
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
            now = self._closed or self._size >= self._limit
        if now:
            self.flush()

    def flush(self) -> None:
        with self._buffer_lock:
            lines, self._lines, self._size = self._lines, [], 0
        if not lines:
            return
        target = self._target
        target.acquire()
        try:
            stream = target.stream
            if stream is None and isinstance(target, logging.FileHandler) and target.mode != "w":
                stream = target.stream = target._open()  # closed by a shutdown: as emit does
            if stream is not None and not stream.closed:
                stream.write("\n".join(lines) + "\n")
                stream.flush()
        finally:
            target.release()

    def _run(self, interval: float = 0.5) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception as exc:  # a failed write (a full disk): say so, carry on
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"medsecrets: access log lines lost ({type(exc).__name__})\n")

    def close(self) -> None:
        with self._buffer_lock:
            self._closed = True  # from now on each line is written at once
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
    A missing ``file`` is created 0600; one that cannot be opened for appending raises
    ``ConfigError`` naming ``log_file`` (nothing is changed then).

    Idempotent: replaces the handlers installed by a previous call. Returns the handler.
    """
    if file is not None:
        _create_log_file(file)
    flush_logging()  # into the previous handler, before log_json closes it
    handler = log_json(level, file=file)
    assert isinstance(handler, logging.StreamHandler)  # a FileHandler is one too
    _defer_access_lines(handler)
    route_server_loggers()
    return handler


def _create_log_file(path: str) -> None:
    """Create ``path`` 0600 if it is missing (whatever the umask: the lines name principals,
    paths and addresses), or check it can be appended to; ``ConfigError`` naming
    ``log_file`` when it cannot (a missing or read-only directory, a directory)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY
    try:
        # O_NONBLOCK: a FIFO with no reader fails at once instead of holding the start
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"setting 'log_file': cannot open {path!r} for appending ({exc.strerror or exc})"
        ) from None
    os.close(fd)


def _defer_access_lines(handler: logging.StreamHandler[TextIO] | logging.FileHandler) -> None:
    flush_logging()
    access = logging.getLogger(_ACCESS_LOGGER)
    batcher = _BatchedLines(handler)
    access.addHandler(batcher)
    access.propagate = False
    _batchers.append(batcher)
    set_access_sink(batcher.write_line if access.isEnabledFor(logging.INFO) else None)


def granian_log_config() -> dict[str, object]:
    """granian's ``log_dictconfig``: an incremental ``dictConfig`` that only sets the level
    of granian's logger (granian adds that), closing no handler (a full one closes them all,
    the access-line batcher's thread too: lines then waited for 64 KiB to gather)."""
    return {
        "version": 1,
        "incremental": True,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {},
        "loggers": {},
    }


class _KnownNotices(logging.Filter):
    """Drops the warnings granian logs at every start that ask nothing of an operator.

    ``Embedded server is experimental!``: the server runs granian's embedded
    server (``server.runner``: one process that owns the store, its audit
    process and the signals) on purpose, and a warning at every start teaches
    operators to skip warnings. Matched exactly; any other record passes.
    """

    NOTICES: Final = frozenset({"Embedded server is experimental!"})

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.msg in self.NOTICES)


_KNOWN_NOTICES: Final = _KnownNotices()


def route_server_loggers() -> None:
    """Make the ASGI servers' loggers propagate to the root JSON handler (call after they
    configure themselves: granian runs ``dictConfig`` when its server is constructed),
    without granian's notices that ask nothing of an operator (``_KnownNotices``)."""
    for name in _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        if name == "_granian" and _KNOWN_NOTICES not in logger.filters:
            logger.addFilter(_KNOWN_NOTICES)
