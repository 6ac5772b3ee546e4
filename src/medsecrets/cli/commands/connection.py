"""The options every server command shares, and the SDK client they open.

``--addr`` / ``MEDSECRETS_ADDR`` (comma-separated list for failover),
``--token`` / ``MEDSECRETS_TOKEN``, ``--cacert`` / ``MEDSECRETS_CACERT`` and
``--output table|json`` (``MEDSECRETS_OUTPUT``). A token given with ``--token``
on the command line is visible to other users (``ps``, shell history), so the
CLI warns about it.

The client certificate for a server that asks for one (``tls.client_ca``):
``--client-cert FILE [--client-key FILE]``, or ``MEDSECRETS_CLIENT_CERT`` /
``MEDSECRETS_CLIENT_KEY`` (an encrypted key's password only as
``MEDSECRETS_CLIENT_KEY_PASSWORD``, never an option). The options are taken
before the command (the root command's, which also read the variables) and
wherever ``--cacert`` is, after it: ``accept_client_certificate_options`` adds
them, declared once (``ClientCertHereOption``), to every command that has a
``cacert`` parameter, so no command declares them. Either kind keeps its value
in the Click context's ``meta`` (``remember_client_certificate``, the options'
callback), which every subcommand's context shares; one given after the command
wins over one given before it, and ``connection`` takes them from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
import typer.main

from medsecrets.cli.errors import CliError, ExitCode, click_module
from medsecrets.cli.output import OutputFormat, warn
from medsecrets.wire import JSON

if TYPE_CHECKING:
    from typer._click import Command, Parameter  # the Click Typer runs on (click_module)

    from medsecrets.sdk import Client

__all__ = [
    "DEFAULT_ADDR",
    "AddrOption",
    "CacertOption",
    "ClientCertOption",
    "ClientKeyOption",
    "Connection",
    "OutputOption",
    "TokenOption",
    "accept_client_certificate_options",
    "connection",
    "open_client",
    "read_catalog",
    "remember_client_certificate",
]

DEFAULT_ADDR = "http://127.0.0.1:8200"

AddrOption = Annotated[
    str | None,
    typer.Option(
        "--addr",
        envvar="MEDSECRETS_ADDR",
        help=f"Server address(es), comma-separated (default: {DEFAULT_ADDR}).",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MEDSECRETS_TOKEN",
        help="Token (prefer the environment variable: options show up in ps and history).",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
CacertOption = Annotated[
    str | None,
    typer.Option(
        "--cacert",
        envvar="MEDSECRETS_CACERT",
        help="CA certificate file (PEM) to verify the server's TLS certificate.",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
ClientCertOption = Annotated[
    str | None,
    typer.Option(
        "--client-cert",
        envvar="MEDSECRETS_CLIENT_CERT",
        help=(
            "Client certificate (PEM) for a server that requires one (tls.client_ca). "
            "Holds the key too unless --client-key is given."
        ),
        show_default=False,
        rich_help_panel="Connection",
    ),
]
ClientKeyOption = Annotated[
    str | None,
    typer.Option(
        "--client-key",
        envvar="MEDSECRETS_CLIENT_KEY",
        help=(
            "Private key (PEM) of --client-cert; an encrypted one needs "
            "MEDSECRETS_CLIENT_KEY_PASSWORD."
        ),
        show_default=False,
        rich_help_panel="Connection",
    ),
]
OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        envvar="MEDSECRETS_OUTPUT",
        help="table (for people) or json (for machines).",
    ),
]


_META_CLIENT_CERT = "medsecrets.client_cert"
_META_CLIENT_KEY = "medsecrets.client_key"
_OPTIONS = {
    "cacert": ("--cacert", "MEDSECRETS_CACERT"),
    "client_cert": ("--client-cert", "MEDSECRETS_CLIENT_CERT"),
    "client_key": ("--client-key", "MEDSECRETS_CLIENT_KEY"),
}
"""Each certificate parameter's option and variable, to name it in messages (``_named``)."""
KEY_PASSWORD_NAME = "MEDSECRETS_CLIENT_KEY_PASSWORD"  # noqa: S105 - a variable's name
"""How an encrypted key's password is given to the CLI (never as an option)."""


def _named(parameter: str, value: str | None, source: object) -> str:
    """How messages name the setting ``parameter``: as it was given (its option, or its
    variable: ``source`` is Click's ``ParameterSource``), or both when it was not."""
    option, variable = _OPTIONS[parameter]
    kind = getattr(source, "name", None) if value else None
    if kind == "COMMANDLINE":
        return option
    if kind == "ENVIRONMENT":
        return variable
    return f"{option} / {variable}"


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom to connect (``token`` is masked in ``repr``); ``client_cert`` and
    ``client_key``: the client certificate's files (``None``: the SDK's environment).
    The ``*_name`` fields: how the SDK's messages name those settings (``_named``), so a
    user reads the option or variable they used, never the SDK's parameter."""

    addr: str
    token: str | None
    cacert: str | None
    client_cert: str | None = None
    client_key: str | None = None
    cacert_name: str = _named("cacert", None, None)
    client_cert_name: str = _named("client_cert", None, None)
    client_key_name: str = _named("client_key", None, None)

    def __repr__(self) -> str:
        token = "None" if self.token is None else "'**********'"
        return (
            f"Connection(addr={self.addr!r}, token={token}, cacert={self.cacert!r}, "
            f"client_cert={self.client_cert!r}, client_key={self.client_key!r})"
        )


def remember_client_certificate(client_cert: str | None, client_key: str | None) -> None:
    """Keep the global ``--client-cert``/``--client-key`` for the command under way (the
    current Click context's ``meta``, shared by the subcommands' contexts)."""
    context = click_module().globals.get_current_context(silent=True)
    if context is not None:
        for key, parameter, value in (
            (_META_CLIENT_CERT, "client_cert", client_cert),
            (_META_CLIENT_KEY, "client_key", client_key),
        ):
            context.meta[key] = value or None
            source = context.get_parameter_source(parameter)
            context.meta[f"{key}.name"] = _named(parameter, value, source)


def _remember_here(
    context: typer.Context, parameter: typer.CallbackParam, value: str | None
) -> None:
    """The callback of a command's own ``--client-cert``/``--client-key``: a value given
    (``""``: none) replaces the one given before the command; none leaves it."""
    if value is not None:
        name = "client_cert" if parameter.name == "client_cert" else "client_key"
        key = _META_CLIENT_CERT if name == "client_cert" else _META_CLIENT_KEY
        context.meta[key] = value or None
        context.meta[f"{key}.name"] = _named(name, value, context.get_parameter_source(name))


ClientCertHereOption = Annotated[
    str | None,
    typer.Option(
        "--client-cert",
        help="Client certificate (PEM) for a server that requires one (tls.client_ca); "
        "MEDSECRETS_CLIENT_CERT. Holds the key too unless --client-key is given.",
        show_default=False,
        rich_help_panel="Connection",
        callback=_remember_here,
    ),
]
ClientKeyHereOption = Annotated[
    str | None,
    typer.Option(
        "--client-key",
        help="Private key (PEM) of --client-cert (MEDSECRETS_CLIENT_KEY); an encrypted one "
        "needs MEDSECRETS_CLIENT_KEY_PASSWORD.",
        show_default=False,
        rich_help_panel="Connection",
        callback=_remember_here,
    ),
]
"""The declarations of the options a command with ``--cacert`` also takes (no variable:
the root command reads it, and a variable here would override a value given before
the command)."""


def _client_certificate_parameters() -> list[Parameter]:
    """Click parameters for ``ClientCertHereOption`` and ``ClientKeyHereOption`` (made by
    Typer from a command that only declares them), passed to no command function."""
    holder = typer.Typer()

    @holder.command()
    def declare(
        client_cert: ClientCertHereOption = None, client_key: ClientKeyHereOption = None
    ) -> None:
        """Only declares the options."""
        del client_cert, client_key

    parameters = list(typer.main.get_command(holder).params)
    for parameter in parameters:
        parameter.expose_value = False  # kept by the callback, not passed to the command
    return parameters


def accept_client_certificate_options(command: Command) -> None:
    """Give ``command`` and every command under it that takes ``--cacert`` (a ``cacert``
    parameter) ``--client-cert`` and ``--client-key`` too (``ClientCertHereOption``), so
    that they are accepted where ``--cacert`` is, after the command, as well as before
    it. Idempotent; the command functions do not see them (``connection`` does)."""
    subcommands = getattr(command, "commands", None)
    if isinstance(subcommands, dict):
        for subcommand in subcommands.values():
            accept_client_certificate_options(subcommand)
    names = {parameter.name for parameter in command.params}
    if "cacert" in names and "client_cert" not in names:
        command.params.extend(_client_certificate_parameters())


def connection(addr: str | None, token: str | None, cacert: str | None) -> Connection:
    """The ``Connection`` from the shared options (and the global client certificate,
    ``remember_client_certificate``); warns when the token came as an option."""
    context = click_module().globals.get_current_context(silent=True)
    meta = context.meta if context is not None else {}
    if token and context is not None:
        source = context.get_parameter_source("token")
        if getattr(source, "name", None) == "COMMANDLINE":
            warn(
                "a token given with --token is visible to other users (ps, shell history); "
                "prefer MEDSECRETS_TOKEN"
            )
    cacert_source = context.get_parameter_source("cacert") if context is not None else None
    return Connection(
        addr=addr or DEFAULT_ADDR,
        token=token or None,
        cacert=cacert or None,
        client_cert=meta.get(_META_CLIENT_CERT),
        client_key=meta.get(_META_CLIENT_KEY),
        cacert_name=_named("cacert", cacert, cacert_source),
        client_cert_name=meta.get(f"{_META_CLIENT_CERT}.name", _named("client_cert", None, None)),
        client_key_name=meta.get(f"{_META_CLIENT_KEY}.name", _named("client_key", None, None)),
    )


@contextmanager
def open_client(conn: Connection) -> Iterator[Client]:
    """An SDK ``Client`` for ``conn``; a connection failure becomes one readable error, and
    so does a bad setting (a client certificate that cannot be used: exit 2). Its
    messages name the settings as ``conn`` says they were given (``--client-cert``,
    ``MEDSECRETS_CLIENT_CERT``), never as the SDK's parameters."""
    import httpx

    from medsecrets.sdk import Client
    from medsecrets.sdk.transport import SettingNames

    addresses = [a.strip() for a in conn.addr.split(",") if a.strip()]
    names = SettingNames(
        cacert=conn.cacert_name,
        client_cert=conn.client_cert_name,
        client_key=conn.client_key_name,
        client_key_password=KEY_PASSWORD_NAME,
    )
    try:
        client = Client(
            addresses,
            conn.token,
            cacert=conn.cacert,
            client_cert=conn.client_cert,
            client_key=conn.client_key,
            setting_names=names,
        )
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot use the connection settings: {exc}", ExitCode.USAGE) from None
    try:
        with client:
            yield client
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the server at {conn.addr} ({type(exc).__name__})") from None


def _json_object(data: object) -> dict[str, JSON]:
    if not isinstance(data, dict):
        raise CliError("unexpected catalog data from the server")
    return data


def read_catalog(client: Client, category: str | None = None) -> dict[str, JSON]:
    """The server's catalog (or one category) exactly as the API sends it.

    Read through ``Client.call`` rather than ``Client.catalog()``: the CLI only
    displays the wire form, and rebuilding ``catalog.model.Category`` on the
    client re-runs catalog checks that need data the API does not send (dummies).
    An answer without the shape of the API's catalog (or ``Category``) is a
    ``CliError`` (exit 1), as any other answer the server should not give.
    """
    from urllib.parse import quote

    from medsecrets.errors import InvalidRequest
    from medsecrets.schema.catalog import CatalogInfo, CategoryInfo
    from medsecrets.sdk.transport import Call
    from medsecrets.wire import from_wire

    path = "/v1/catalog" if category is None else f"/v1/catalog/{quote(category, safe='')}"
    data = client.call(Call("GET", path, _json_object))
    try:
        from_wire(CatalogInfo if category is None else CategoryInfo, data)
    except InvalidRequest:
        raise CliError("unexpected answer from the server") from None
    return data
