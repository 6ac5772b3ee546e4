"""The options every server command shares, and the SDK client they open.

``--addr`` / ``MEDSECRETS_ADDR`` (comma-separated list for failover),
``--token`` / ``MEDSECRETS_TOKEN``, ``--cacert`` / ``MEDSECRETS_CACERT`` and
``--output table|json`` (``MEDSECRETS_OUTPUT``). A token given with ``--token``
on the command line is visible to other users (``ps``, shell history), so the
CLI warns about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from medsecrets.cli.errors import CliError, ExitCode, click_module
from medsecrets.cli.output import OutputFormat, warn
from medsecrets.wire import JSON

if TYPE_CHECKING:
    from medsecrets.sdk import Client

__all__ = [
    "DEFAULT_ADDR",
    "AddrOption",
    "CacertOption",
    "Connection",
    "OutputOption",
    "TokenOption",
    "connection",
    "open_client",
    "read_catalog",
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
OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        envvar="MEDSECRETS_OUTPUT",
        help="table (for people) or json (for machines).",
    ),
]


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom to connect (``token`` is masked in ``repr``)."""

    addr: str
    token: str | None
    cacert: str | None

    def __repr__(self) -> str:
        token = "None" if self.token is None else "'**********'"
        return f"Connection(addr={self.addr!r}, token={token}, cacert={self.cacert!r})"


def connection(addr: str | None, token: str | None, cacert: str | None) -> Connection:
    """The ``Connection`` from the shared options; warns when the token came as an option."""
    context = click_module().globals.get_current_context(silent=True)
    if token and context is not None:
        source = context.get_parameter_source("token")
        if getattr(source, "name", None) == "COMMANDLINE":
            warn(
                "a token given with --token is visible to other users (ps, shell history); "
                "prefer MEDSECRETS_TOKEN"
            )
    return Connection(addr=addr or DEFAULT_ADDR, token=token or None, cacert=cacert or None)


@contextmanager
def open_client(conn: Connection) -> Iterator[Client]:
    """An SDK ``Client`` for ``conn``; a connection failure becomes one readable error."""
    import httpx

    from medsecrets.sdk import Client

    addresses = [a.strip() for a in conn.addr.split(",") if a.strip()]
    try:
        client = Client(addresses, conn.token, cacert=conn.cacert)
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
