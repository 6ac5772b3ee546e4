"""Server fixtures: a test CA, real server processes, and a one-shot start for failures.

``ServerProcess`` and ``write_test_certificates`` live in
``medsecrets.testing.serverproc`` so the SDK and CLI tests can use them too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from medsecrets.testing.receivers import HttpReceiver, SmtpSink
from medsecrets.testing.serverproc import (
    ServerProcess,
    TestCertificates,
    free_port,
    write_test_certificates,
)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost."""
    return write_test_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    """A local SMTP server (aiosmtpd) taking every message: the sink and its port."""
    sink, port = SmtpSink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[HttpReceiver]:
    """A local HTTP receiver taking every POST (an alert webhook's peer)."""
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A dev-mode server process on a fresh data directory."""
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        yield server


@dataclass(frozen=True, slots=True)
class Finished:
    """A server process that ended on its own."""

    code: int
    stdout: str
    stderr: str


def run_server(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Finished:
    """Run ``python -m medsecrets.server ARGS`` expecting it to exit by itself."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    base.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "medsecrets.server", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Finished(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def port() -> int:
    """A free port on 127.0.0.1."""
    return free_port()
