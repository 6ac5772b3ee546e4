"""Fixtures for the CLI tests: the console script run as a subprocess, real server processes.

``run_cli(*args, input=..., env=...)`` runs ``python -m medsecrets.cli`` with a clean
``MEDSECRETS_*`` environment (plus what the test passes) and returns a ``CliResult``.
``dev_server`` is one dev-mode server process shared by the session (tests use
their own secret paths); ``fresh_dev_server`` and ``shamir_server`` are per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from medsecrets.testing.serverproc import ServerProcess

CLI = [sys.executable, "-m", "medsecrets.cli"]


@dataclass(frozen=True)
class CliResult:
    """What one CLI run did."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)

    def ok(self) -> CliResult:
        assert self.code == 0, f"{self.args}: exit {self.code}\n{self.stderr}"
        return self

    def error(self, code: int) -> str:
        """Assert a failure with ``code`` and one ``error:`` line; return that line."""
        assert self.code == code, f"{self.args}: exit {self.code} != {code}\n{self.stderr}"
        assert "Traceback" not in self.stderr
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1, self.stderr
        assert lines[-1] == errors[0], self.stderr
        assert all(line.startswith(("warning: ", "error: ")) for line in lines), self.stderr
        return errors[0]


Runner = Callable[..., CliResult]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    env["COLUMNS"] = "250"
    env["NO_COLOR"] = "1"
    return env


def run_cli(
    *args: str,
    input: str = "",
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> CliResult:
    """Run the CLI once (see module docstring)."""
    full_env = _base_env()
    full_env.update(env or {})
    proc = subprocess.run(
        [*CLI, *args],
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return CliResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def cli() -> Runner:
    """``run_cli`` with no server settings."""
    return run_cli


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One dev-mode server process for the session."""
    from medsecrets.testing.serverproc import ServerProcess

    with ServerProcess(tmp_path_factory.mktemp("cli-dev"), dev=True) as server:
        yield server


def _bound(server: ServerProcess) -> Runner:
    def run(*args: str, input: str = "", env: Mapping[str, str] | None = None) -> CliResult:
        base = {"MEDSECRETS_ADDR": server.addr}
        if server.token:
            base["MEDSECRETS_TOKEN"] = server.token
        base.update(env or {})
        return run_cli(*args, input=input, env=base)

    return run


@pytest.fixture(scope="session")
def ms(dev_server: ServerProcess) -> Runner:
    """``run_cli`` pointed at the shared dev server with its root token."""
    return _bound(dev_server)


@pytest.fixture
def fresh_dev_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A dev-mode server of the test's own (for sealing)."""
    from medsecrets.testing.serverproc import ServerProcess

    with ServerProcess(tmp_path / "data", dev=True) as server:
        yield server


@pytest.fixture
def shamir_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A non-dev server, uninitialised, without TLS, waiting for ``operator init`` (shamir)."""
    from medsecrets.testing.serverproc import ServerProcess

    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{data}"\ntls_disable = true\n', encoding="utf-8")
    with ServerProcess(data, dev=False, extra_args=("--config", str(config))) as server:
        yield server


@pytest.fixture
def secret_path() -> str:
    """A fresh secret path in category ``external-services`` (fields smtp_password, ...)."""
    return f"medessence/cli/external-services/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def canary() -> str:
    """A value that must never show up where it was not asked for."""
    return f"CANARY-{uuid.uuid4().hex}"
