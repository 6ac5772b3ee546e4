"""The CLI's certificate messages name the settings as the user gave them: ``--client-cert``,
``--client-key``, ``--cacert`` or their ``MEDSECRETS_*`` variables, never the SDK's
parameters (``client_cert``, ``client_key``, ``client_key_password``, ``cacert``), which
a CLI user cannot type. The console script run as a subprocess, against a real server
with ``tls.client_ca`` where a handshake is involved."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from tests.cli.conftest import Runner
from tests.sdk.mtls import ClientCertificates, MutualTlsServer, write_client_certificates

SDK_NAME = re.compile(r"(?<![-\w])(client_cert|client_key|client_key_password|cacert)\b")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MutualTlsServer]:
    certs = write_client_certificates(tmp_path_factory.mktemp("cli-names-certs"))
    with MutualTlsServer(tmp_path_factory.mktemp("cli-names-server"), certs) as process:
        yield process


def _env(server: MutualTlsServer, *, cacert: bool = True, **extra: str) -> dict[str, str]:
    assert server.token is not None
    env = {"MEDSECRETS_ADDR": server.addr, "MEDSECRETS_TOKEN": server.token}
    if cacert:
        env["MEDSECRETS_CACERT"] = server.certs.server.ca_file
    env.update(extra)
    return env


def _line(cli: Runner, args: tuple[str, ...], env: dict[str, str], code: int) -> str:
    line = cli(*args, "secrets", "list", env=env, timeout=30).error(code)
    assert not SDK_NAME.search(line), line
    return line


def _cases(certs: ClientCertificates) -> list[tuple[tuple[str, ...], dict[str, str], str]]:
    """(options, variables, what the one line must say) for files that cannot be used."""
    return [
        (
            ("--client-cert", certs.cert),
            {},
            "no PEM private key in it (give the key with --client-key / MEDSECRETS_CLIENT_KEY)",
        ),
        (
            (),
            {"MEDSECRETS_CLIENT_CERT": certs.cert},
            "(give the key with --client-key / MEDSECRETS_CLIENT_KEY)",
        ),
        (
            ("--client-key", certs.key),
            {},
            "a client key needs its certificate (--client-cert / MEDSECRETS_CLIENT_CERT)",
        ),
        (
            (),
            {"MEDSECRETS_CLIENT_KEY": certs.key},
            "a client key needs its certificate (--client-cert / MEDSECRETS_CLIENT_CERT)",
        ),
        (
            ("--client-cert", certs.cert, "--client-key", certs.encrypted_key),
            {},
            "is encrypted: give its password with MEDSECRETS_CLIENT_KEY_PASSWORD",
        ),
    ]


def test_unusable_files_name_the_options_and_variables_given(
    cli: Runner, server: MutualTlsServer
) -> None:
    wrong = []
    for options, variables, expected in _cases(server.certs):
        line = cli(*options, "secrets", "list", env=_env(server, **variables)).error(2)
        if expected not in line or SDK_NAME.search(line):
            wrong.append((options, variables, line))
    assert not wrong, "\n".join(map(repr, wrong))


def test_after_the_command_the_option_is_named_too(cli: Runner, server: MutualTlsServer) -> None:
    certs = server.certs
    line = cli("secrets", "list", "--client-cert", certs.cert, env=_env(server)).error(2)
    assert "(give the key with --client-key / MEDSECRETS_CLIENT_KEY)" in line
    assert not SDK_NAME.search(line), line


def test_a_handshake_without_a_certificate_names_the_option_and_variable(
    cli: Runner, server: MutualTlsServer
) -> None:
    line = _line(cli, (), _env(server), 1)
    assert "requires a client certificate; see --client-cert / MEDSECRETS_CLIENT_CERT)" in line


@pytest.mark.parametrize("given", ["option", "variable"])
def test_a_refused_certificate_names_how_it_was_given(
    cli: Runner, server: MutualTlsServer, given: str
) -> None:
    certs = server.certs
    if given == "option":
        args: tuple[str, ...] = ("--client-cert", certs.other_cert, "--client-key", certs.other_key)
        env = _env(server)
        name = "--client-cert"
    else:
        args = ()
        env = _env(
            server, MEDSECRETS_CLIENT_CERT=certs.other_cert, MEDSECRETS_CLIENT_KEY=certs.other_key
        )
        name = "MEDSECRETS_CLIENT_CERT"
    line = _line(cli, args, env, 1)
    assert "refused the client certificate" in line and f"; see {name})" in line


@pytest.mark.parametrize("given", ["option", "variable", "none"])
def test_an_untrusted_server_names_how_the_ca_was_given(
    cli: Runner, server: MutualTlsServer, given: str
) -> None:
    """A CA that did not sign the server's certificate (the client CA), or none (the
    system's CAs, which did not either)."""
    wrong_ca = server.certs.client_ca
    env = _env(server, cacert=False)
    args: tuple[str, ...] = ()
    if given == "option":
        args = ("--cacert", wrong_ca)
    elif given == "variable":
        env["MEDSECRETS_CACERT"] = wrong_ca
    line = cli("secrets", "list", *args, env=env, timeout=30).error(1)
    assert not SDK_NAME.search(line), line
    name = {"option": "--cacert", "variable": "MEDSECRETS_CACERT"}
    expected = name.get(given, "--cacert / MEDSECRETS_CACERT")
    assert f"untrusted certificate or protocol; see {expected})" in line
