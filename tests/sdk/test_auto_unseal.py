"""``Client.auto_unseal`` / ``AsyncClient.auto_unseal`` (``POST /v1/sys/unseal`` with ``{}``)
against real key-file and Shamir servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.errors import InvalidRequest, PermissionDenied
from medsecrets.schema.seal import KeyFileSealConfig, SealStatus, ShamirSealConfig
from medsecrets.sdk import AsyncClient, Client
from medsecrets.testing.serverproc import ServerProcess


@pytest.fixture
def keyfile_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A non-dev server initialised with a key-file seal, and its root token."""
    with ServerProcess(
        tmp_path / "data",
        dev=False,
        env={"MEDSECRETS_TLS_DISABLE": "true"},
        log_dir=tmp_path / "logs",
    ) as process:
        with Client(process.addr, env={}) as client:
            init = client.init(KeyFileSealConfig(path=str(tmp_path / "unseal.key")))
        yield process, init.root_token.reveal()


def _async_auto_unseal(addr: str) -> SealStatus:
    async def run() -> SealStatus:
        async with AsyncClient(addr, env={}, sleep=_no_sleep) as client:
            return await client.auto_unseal()

    return asyncio.run(run())


async def _no_sleep(_: float) -> None:
    return None


def test_auto_unseal_of_a_key_file_seal(keyfile_server: tuple[ServerProcess, str]) -> None:
    process, root = keyfile_server
    with Client(process.addr, env={}, sleep=lambda _: None) as client:  # no token needed
        status = client.auto_unseal()
        assert status.seal_type == "keyfile" and status.sealed is False
    assert _async_auto_unseal(process.addr).sealed is False

    with Client(process.addr, root, env={}) as client:
        assert client.seal().sealed is True
        # an operator's seal holds against an auto-unseal until the server restarts
        with pytest.raises(PermissionDenied, match="sealed by an operator"):
            client.auto_unseal()
        with pytest.raises(PermissionDenied, match="sealed by an operator"):
            _async_auto_unseal(process.addr)
        assert client.seal_status().sealed is True

    process.restart()
    with Client(process.addr, env={}) as client:
        assert client.auto_unseal().sealed is False  # the start unsealed it: nothing to do


def test_auto_unseal_of_a_shamir_seal_is_refused(shamir_server: ServerProcess) -> None:
    with Client(shamir_server.addr, env={}) as client:
        client.init(ShamirSealConfig(shares=1, threshold=1))
        with pytest.raises(InvalidRequest, match="shamir seal cannot auto-unseal"):
            client.auto_unseal()
