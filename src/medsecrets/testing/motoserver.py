"""``MotoServer``: a throwaway moto server *process* on 127.0.0.1 for AWS tests.

Usage::

    with MotoServer() as moto:
        client = boto3.client("kms", endpoint_url=moto.endpoint_url, ...)

It starts ``python -m moto.server`` on a free port, waits until the server
answers HTTP, exposes ``endpoint_url`` and stops the process on exit. It sets
no environment variables in this process: callers pass the endpoint and dummy
credentials to their clients explicitly (see ``DUMMY_CREDENTIALS``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import IO

__all__ = ["DUMMY_ACCESS_KEY_ID", "DUMMY_SECRET_ACCESS_KEY", "MotoServer"]

DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - moto accepts any credentials


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """A moto server subprocess; a context manager (``start``/``stop`` also public).

    ``startup_timeout`` bounds how long ``start`` waits for the server to answer
    before raising ``RuntimeError`` with the tail of the server's log.
    """

    def __init__(self, *, host: str = "127.0.0.1", startup_timeout: float = 60.0) -> None:
        self._host = host
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self._port is None or self._process is None:
            raise RuntimeError("the moto server is not running")
        return f"http://{self._host}:{self._port}"

    def __repr__(self) -> str:
        running = self._process is not None and self._process.poll() is None
        return f"MotoServer(port={self._port}, running={running})"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        if self._process is not None:
            raise RuntimeError("the moto server is already running")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        for _ in range(5):  # the free port may be taken before the server binds it
            self._port = _free_port()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self._host, "-p", str(self._port)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
            if self._wait_ready():
                return
            if self._process.poll() is None:
                break
            self._process = None
        log = self._log_tail()
        self.stop()
        raise RuntimeError(f"moto server did not start:\n{log}")

    def _wait_ready(self) -> bool:
        assert self._process is not None
        url = f"http://{self._host}:{self._port}/moto-api/"
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    response.read()
                return True
            except urllib.error.HTTPError:
                return True  # it answers HTTP: it is up
            except OSError:
                time.sleep(0.1)
        return False

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._log.seek(0)
            return self._log.read()[-4000:].decode("utf-8", "replace")
        return ""

    def stop(self) -> None:
        """Stop the server (terminate, then kill). Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
