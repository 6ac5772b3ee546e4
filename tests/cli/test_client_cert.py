"""The CLI's client certificate (``--client-cert``/``--client-key``, global options, and
``MEDSECRETS_CLIENT_CERT``/``MEDSECRETS_CLIENT_KEY``) against a real server with
``tls.client_ca``: the console script run as a subprocess."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.conftest import Runner
from tests.sdk.mtls import (
    KEY_PASSWORD,
    ClientCertificates,
    MutualTlsServer,
    write_client_certificates,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MutualTlsServer]:
    certs = write_client_certificates(tmp_path_factory.mktemp("cli-mtls-certs"))
    with MutualTlsServer(tmp_path_factory.mktemp("cli-mtls-server"), certs) as process:
        yield process


def _env(server: MutualTlsServer, **extra: str) -> dict[str, str]:
    assert server.token is not None
    env = {
        "MEDSECRETS_ADDR": server.addr,
        "MEDSECRETS_TOKEN": server.token,
        "MEDSECRETS_CACERT": server.certs.server.ca_file,
    }
    env.update(extra)
    return env


def _certs(server: MutualTlsServer) -> ClientCertificates:
    return server.certs


def test_options_before_the_command(cli: Runner, server: MutualTlsServer) -> None:
    certs = _certs(server)
    result = cli(
        "--client-cert", certs.cert, "--client-key", certs.key, "operator", "status", "-o", "json",
        env=_env(server),
    ).ok()  # fmt: skip
    assert result.json()["sealed"] is False  # type: ignore[index]


def test_environment_variables(cli: Runner, server: MutualTlsServer) -> None:
    certs = _certs(server)
    env = _env(server, MEDSECRETS_CLIENT_CERT=certs.cert, MEDSECRETS_CLIENT_KEY=certs.key)
    cli("secrets", "list", "-o", "json", env=env).ok()
    combined = _env(server, MEDSECRETS_CLIENT_CERT=certs.combined)
    cli("token", "lookup", "-o", "json", env=combined).ok()


def test_encrypted_key_with_its_password_from_the_environment(
    cli: Runner, server: MutualTlsServer
) -> None:
    certs = _certs(server)
    env = _env(server, MEDSECRETS_CLIENT_KEY_PASSWORD=KEY_PASSWORD)
    args = ("--client-cert", certs.cert, "--client-key", certs.encrypted_key)
    cli(*args, "operator", "status", env=env).ok()
    line = cli(*args, "operator", "status", env=_env(server)).error(2)
    assert "is encrypted" in line and "MEDSECRETS_CLIENT_KEY_PASSWORD" in line


def test_without_a_certificate_one_line(cli: Runner, server: MutualTlsServer) -> None:
    line = cli("secrets", "list", env=_env(server)).error(1)
    assert "TLS handshake with" in line and "requires a client certificate" in line


def test_a_certificate_of_another_ca_one_line(cli: Runner, server: MutualTlsServer) -> None:
    certs = _certs(server)
    line = cli(
        "--client-cert", certs.other_cert, "--client-key", certs.other_key, "secrets", "list",
        env=_env(server),
    ).error(1)  # fmt: skip
    assert "refused the client certificate" in line


def test_bad_files_one_line_naming_the_file(
    cli: Runner, server: MutualTlsServer, tmp_path: Path
) -> None:
    certs = _certs(server)
    key_lines = certs.key_lines()
    missing = str(tmp_path / "missing.pem")
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    encrypted = ("--client-cert", certs.cert, "--client-key", certs.encrypted_key)
    cases = [
        (("--client-cert", missing), f"{missing!r}: No such file or directory"),
        (("--client-cert", str(tmp_path)), "not a regular file"),  # a directory
        (("--client-cert", str(fifo)), "not a regular file"),  # never waited on
        (("--client-cert", certs.cert, "--client-key", "/dev/zero"), "not a regular file"),
        (("--client-cert", certs.pkcs12), "binary DER or PKCS#12: convert it to PEM"),
        (("--client-cert", certs.cert, "--client-key", certs.rsa_key), "does not match"),
        (("--client-cert", certs.key, "--client-key", certs.key), "no PEM certificate"),
        (("--client-cert", certs.cert), "no PEM private key"),
        (("--client-cert", certs.cert, "--client-key", certs.other_key), "does not match"),
        (("--client-key", certs.key), "a client key needs its certificate"),
    ]
    for options, expected in cases:
        result = cli(*options, "secrets", "list", env=_env(server), timeout=30)
        line = result.error(2)
        assert expected in line, (options, line)
        assert not any(key_line in result.stderr for key_line in key_lines)
    # a password that is not UTF-8 (a byte 0xff): no character of it in the message
    env = _env(server, MEDSECRETS_CLIENT_KEY_PASSWORD="s3cret\udcff", MEDSECRETS_DEBUG="1")
    line = cli(*encrypted, "secrets", "list", env=env).error(2)
    assert "password of the client key" in line and "not valid Unicode text" in line
    assert "s3cret" not in line and "\\x" not in line and "udcff" not in line


def test_the_options_after_the_command_as_cacert_is(cli: Runner, server: MutualTlsServer) -> None:
    """Where ``--cacert`` is accepted, after the command's name, so are the client
    certificate options (commands of every group, audit's included); there they win
    over the ones given before the command."""
    certs = _certs(server)
    cert = ("--client-cert", certs.cert, "--client-key", certs.key)
    cli("secrets", "list", *cert, "-o", "json", env=_env(server)).ok()
    cli("token", "lookup", "-o", "json", *cert, env=_env(server)).ok()
    cli("audit", "devices", *cert, env=_env(server)).ok()
    before = ("--client-cert", certs.other_cert, "--client-key", certs.other_key)
    cli(*before, "operator", "status", *cert, env=_env(server)).ok()
    line = cli(*cert, "operator", "status", "--client-key", certs.other_key, env=_env(server))
    assert "does not match" in line.error(2)


def test_every_command_with_cacert_takes_the_client_certificate_options() -> None:
    import typer

    from medsecrets.cli.app import app
    from medsecrets.cli.commands.connection import accept_client_certificate_options

    command = typer.main.get_command(app)
    accept_client_certificate_options(command)
    accept_client_certificate_options(command)  # idempotent
    seen = 0
    groups = [command]
    while groups:
        group = groups.pop()
        for sub in getattr(group, "commands", {}).values():
            groups.append(sub)
            options = [option for param in sub.params for option in param.opts]
            if "--cacert" in options:
                seen += 1
                assert options.count("--client-cert") == options.count("--client-key") == 1
    assert seen > 20


def test_the_options_where_no_cacert_is_say_where_they_go(cli: Runner) -> None:
    for args in (
        ("secrets", "--client-cert", "x.pem", "list"),
        ("catalog", "check", "--client-key", "k"),
    ):
        line = cli(*args).error(2)
        assert (
            "it goes before the command" in line and "after a command that takes --cacert" in line
        )
