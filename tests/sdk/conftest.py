"""Fixtures for the SDK tests: real server processes (``ServerProcess``) and clients on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.sdk import Client
from medsecrets.testing.serverproc import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A dev-mode server process (initialised, unsealed, ``development`` provisioned)."""
    data: Path = tmp_path_factory.mktemp("sdk-server")
    with ServerProcess(data / "data", log_dir=data / "logs") as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    """A root-token client on ``server`` (no environment defaults, no real sleeping)."""
    with Client(server.addr, server.token, env={}, sleep=lambda _: None) as c:
        yield c


@pytest.fixture
def shamir_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A non-dev, uninitialised server (plain HTTP with ``tls_disable``) for init/unseal."""
    with ServerProcess(
        tmp_path / "data",
        dev=False,
        env={"MEDSECRETS_TLS_DISABLE": "true"},
        log_dir=tmp_path / "logs",
    ) as process:
        yield process
