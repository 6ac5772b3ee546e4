"""Client certificates (mutual TLS): both SDK clients against a real server with
``tls.client_ca``, and every client certificate file that cannot be used."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.sdk.mtls import (
    KEY_PASSWORD,
    ClientCertificates,
    MutualTlsServer,
    write_client_certificates,
)

from medsecrets.errors import NotFoundError
from medsecrets.sdk import AsyncClient, Client, ServerUnavailableError
from medsecrets.sdk.errors import ClientCertificateError
from medsecrets.testing.serverproc import free_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClientCertificates:
    return write_client_certificates(tmp_path_factory.mktemp("mtls-certs"))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, certs: ClientCertificates
) -> Iterator[MutualTlsServer]:
    with MutualTlsServer(tmp_path_factory.mktemp("mtls-server"), certs) as process:
        yield process


def _client(server: MutualTlsServer, env: dict[str, str] | None = None, **kwargs: object) -> Client:
    return Client(
        server.addr,
        server.token,
        cacert=server.certs.server.ca_file,
        env=env or {},
        retries=0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_sync_client_with_a_certificate_the_ca_signed(server: MutualTlsServer) -> None:
    certs = server.certs
    with _client(server, client_cert=certs.cert, client_key=certs.key) as client:
        assert client.health().sealed is False
        assert client.token_lookup_self().accessor  # authenticated over the mutual TLS link


def test_async_client_with_a_certificate_the_ca_signed(server: MutualTlsServer) -> None:
    certs = server.certs

    async def run() -> bool:
        async with AsyncClient(
            server.addr,
            server.token,
            cacert=certs.server.ca_file,
            client_cert=certs.cert,
            client_key=certs.key,
            env={},
            retries=0,
        ) as client:
            return (await client.health()).sealed

    assert asyncio.run(run()) is False


def test_environment_names_the_certificate_and_a_combined_file_holds_the_key(
    server: MutualTlsServer,
) -> None:
    env = {"MEDSECRETS_CLIENT_CERT": server.certs.combined}
    with _client(server, env=env) as client:
        assert client.health().sealed is False


def test_certificate_and_key_from_the_environment(server: MutualTlsServer) -> None:
    env = {"MEDSECRETS_CLIENT_CERT": server.certs.cert, "MEDSECRETS_CLIENT_KEY": server.certs.key}
    with _client(server, env=env) as client:
        assert client.health().sealed is False


def test_encrypted_key_with_its_password(server: MutualTlsServer) -> None:
    certs = server.certs
    env = {"MEDSECRETS_CLIENT_KEY_PASSWORD": KEY_PASSWORD}
    with _client(server, env=env, client_cert=certs.cert, client_key=certs.encrypted_key) as c:
        assert c.health().sealed is False
    with _client(
        server,
        client_cert=certs.cert,
        client_key=certs.encrypted_key,
        client_key_password=KEY_PASSWORD,
    ) as c:
        assert c.health().sealed is False


def test_client_certificate_without_a_ca_file(server: MutualTlsServer) -> None:
    """With the system's CAs (here: none trusts the test CA) the certificate is still sent;
    ``verify=False`` makes a context of its own for it."""
    certs = server.certs
    with Client(
        server.addr, server.token, verify=False, client_cert=certs.combined, env={}, retries=0
    ) as client:
        assert client.health().sealed is False


def test_without_a_certificate_one_clear_error(server: MutualTlsServer) -> None:
    with _client(server) as client, pytest.raises(ServerUnavailableError) as caught:
        client.health()
    message = str(caught.value)
    assert "TLS handshake with" in message and "requires a client certificate" in message
    assert "\n" not in message and caught.value.__context__ is None

    async def run() -> None:
        async with AsyncClient(
            server.addr, cacert=server.certs.server.ca_file, env={}, retries=0
        ) as client:
            await client.health()

    with pytest.raises(ServerUnavailableError, match="requires a client certificate"):
        asyncio.run(run())


def test_a_certificate_of_another_ca_is_refused(server: MutualTlsServer) -> None:
    certs = server.certs
    with (
        _client(server, client_cert=certs.other_cert, client_key=certs.other_key) as client,
        pytest.raises(ServerUnavailableError) as caught,
    ):
        client.health()
    message = str(caught.value)
    assert "refused the client certificate" in message and "unknown_ca" in message

    async def run() -> None:
        async with AsyncClient(
            server.addr,
            cacert=certs.server.ca_file,
            client_cert=certs.other_cert,
            client_key=certs.other_key,
            env={},
            retries=0,
        ) as client:
            await client.health()

    with pytest.raises(ServerUnavailableError, match="refused the client certificate"):
        asyncio.run(run())


def _bad_settings(certs: ClientCertificates, tmp: Path) -> list[tuple[dict[str, str], str]]:
    """(client settings, what the one-line message says) for files that cannot be used."""
    not_pem = tmp / "not-pem.der"
    not_pem.write_bytes(ssl.PEM_cert_to_DER_cert(Path(certs.cert).read_text()))
    fifo = tmp / "fifo.pem"
    if not fifo.exists():
        os.mkfifo(fifo)
    missing = str(tmp / "missing.pem")
    cert_text = Path(certs.cert).read_text()
    damaged_cert = tmp / "damaged.pem"
    damaged_cert.write_text(cert_text[: len(cert_text) // 2])
    damaged_key = tmp / "damaged-key.pem"
    damaged_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    encrypted = {"client_cert": certs.cert, "client_key": certs.encrypted_key}
    return [
        ({"client_cert": missing}, f"{missing!r}: No such file or directory"),
        ({"client_cert": str(not_pem)}, "no PEM certificate in it"),
        ({"client_cert": certs.cert, "client_key": str(not_pem)}, "no PEM private key in it"),
        ({"client_cert": certs.cert}, "no PEM private key in it (give the key with client_key"),
        ({"client_cert": certs.key, "client_key": certs.key}, "no PEM certificate in it"),
        ({"client_cert": certs.cert, "client_key": certs.other_key}, "does not match"),
        ({"client_cert": certs.cert, "client_key": str(fifo)}, "not a regular file"),
        ({"client_cert": "/dev/zero"}, "not a regular file"),
        ({"client_key": certs.key}, "a client key needs its certificate"),
        ({"client_cert": certs.cert, "client_key": certs.encrypted_key}, "is encrypted"),
        (
            {
                "client_cert": certs.cert,
                "client_key": certs.encrypted_key,
                "client_key_password": "wrong",
            },
            "cannot decrypt the client key",
        ),
        ({"client_cert": str(tmp)}, "not a regular file"),  # a directory
        ({"client_cert": certs.cert, "client_key": str(tmp)}, "not a regular file"),
        ({"client_cert": certs.cert, "client_key": certs.rsa_key}, "does not match"),  # RSA/EC
        ({"client_cert": certs.der_cert, "client_key": certs.key}, "binary DER or PKCS#12"),
        ({"client_cert": certs.pkcs12}, "binary DER or PKCS#12: convert it to PEM"),
        ({"client_cert": certs.cert, "client_key": certs.pkcs12}, "no PEM private key in it (it"),
        ({"client_cert": str(damaged_cert), "client_key": certs.key}, "damaged.pem': a PEM cert"),
        ({"client_cert": certs.cert, "client_key": str(damaged_key)}, "damaged-key.pem': its PEM"),
        ({"client_cert": f"{certs.cert}\x00"}, "not a file name"),
        ({**encrypted, "client_key_password": "wrong\udcffpw"}, "is not valid Unicode text"),
        ({**encrypted, "client_key_password": "wrong" * 300}, "longer than 1024 bytes"),
    ]


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_files_that_cannot_be_used_are_one_clear_error(
    certs: ClientCertificates, tmp_path: Path, client_class: type[Client] | type[AsyncClient]
) -> None:
    """Raised by the constructor, before anything is sent: a ``ClientCertificateError``
    (a ``ValueError`` too) naming the file and the problem, never a line of the key, and
    with no ``ssl`` exception as its context."""
    key_lines = certs.key_lines()
    wrong: list[tuple[object, str]] = []  # every case that fails, not only the first
    for settings, expected in _bad_settings(certs, tmp_path):
        try:
            client_class("https://127.0.0.1:1", env={}, **settings)  # type: ignore[arg-type]
        except ClientCertificateError as error:
            message = str(error)
            leaks = any(line in message or line in repr(error) for line in key_lines)
            leaks = leaks or "wrong" in message or "udcff" in message
            if expected not in message or "\n" in message or leaks:
                wrong.append((settings, message))
            assert isinstance(error, ValueError)
            assert not isinstance(error.__context__, ssl.SSLError), settings
        except Exception as error:  # collected: another type is a failure too
            wrong.append((settings, f"{type(error).__name__}: {error}"))
        else:
            wrong.append((settings, "accepted"))
    assert not wrong, "\n".join(map(repr, wrong))


def test_bad_file_from_the_environment_names_it(certs: ClientCertificates, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.pem")
    with pytest.raises(ClientCertificateError, match=r"nowhere\.pem"):
        Client("https://127.0.0.1:1", env={"MEDSECRETS_CLIENT_CERT": missing})
    env = {"MEDSECRETS_CLIENT_CERT": "", "MEDSECRETS_CLIENT_KEY": ""}  # empty: unset
    Client("https://127.0.0.1:1", env=env).close()


def _health_and_put(
    server: MutualTlsServer, client_class: type, addr: object, **kwargs: object
) -> str:
    """Run ``health`` then a ``put`` (never retried once sent) with a ``Client`` or an
    ``AsyncClient``; the address that answered."""
    settings = {"cacert": server.certs.server.ca_file, "env": {}, "retries": 0, **kwargs}
    if client_class is Client:
        with Client(addr, server.token, **settings) as client:  # type: ignore[arg-type]
            client.health()
            client.put("medessence/mtls/database", {"username": "u"})
            return client.address

    async def run() -> str:
        async with AsyncClient(addr, server.token, **settings) as client:  # type: ignore[arg-type]
            await client.health()
            await client.put("medessence/mtls/database", {"username": "u"})
            return client.address

    return asyncio.run(run())


def _refused_writes(server: MutualTlsServer, client_class: type, **kwargs: object) -> set[str]:
    """The messages of five ``put`` calls, each the first of a new ``Client`` or
    ``AsyncClient`` (a write is sent as the TLS 1.3 handshake ends, before the server
    refuses the certificate)."""
    settings = {"cacert": server.certs.server.ca_file, "env": {}, "retries": 0, **kwargs}
    path, value = "medessence/mtls-refused/database", {"username": "u"}
    messages: set[str] = set()
    for _ in range(5):
        with pytest.raises(ServerUnavailableError) as caught:
            if client_class is Client:
                with Client(server.addr, server.token, **settings) as client:  # type: ignore[arg-type]
                    client.put(path, value)
            else:

                async def run() -> None:
                    async with AsyncClient(server.addr, server.token, **settings) as client:  # type: ignore[arg-type]
                        await client.put(path, value)

                asyncio.run(run())
        messages.add(str(caught.value))
    return messages


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_an_expired_certificate_is_named_so(server: MutualTlsServer, client_class: type) -> None:
    """The server refuses it in the handshake (the client does not check dates: a server
    that asks for no certificate takes none); both clients say what the alert means,
    for a write too (its alert, lost with the connection the body was written on, is
    found by a probe: the AsyncClient said 'the connection ... broke (ReadError)')."""
    certs = server.certs
    kwargs = {"client_cert": certs.expired_cert, "client_key": certs.expired_key}
    with pytest.raises(ServerUnavailableError) as caught:
        _health_and_put(server, client_class, server.addr, **kwargs)
    message = str(caught.value)
    assert "refused the client certificate: sslv3_alert_certificate_expired" in message
    assert "it has expired or is not valid yet" in message and "\n" not in message
    assert _refused_writes(server, client_class, **kwargs) == {message}


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_a_write_without_a_certificate_says_one_is_required(
    server: MutualTlsServer, client_class: type
) -> None:
    (message,) = _refused_writes(server, client_class)
    assert "TLS handshake with" in message and "requires a client certificate" in message
    certs = server.certs
    with (
        Client(
            server.addr, server.token, cacert=certs.server.ca_file, env={},
            client_cert=certs.cert, client_key=certs.key,
        ) as client,
        pytest.raises(NotFoundError),  # nothing was written
    ):  # fmt: skip
        client.describe("medessence/mtls-refused/database")


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_failover_with_a_client_certificate(server: MutualTlsServer, client_class: type) -> None:
    """A first address that is down: both clients fail over to the next one, presenting
    the certificate there, for a read and for a write."""
    certs = server.certs
    addresses = [f"https://127.0.0.1:{free_port()}", server.addr]
    answered = _health_and_put(
        server, client_class, addresses, client_cert=certs.cert, client_key=certs.key
    )
    assert answered == server.addr
