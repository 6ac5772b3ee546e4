"""``medsecrets token``: create, look up and revoke tokens.

``create`` prints the new token once (stdout; the warning on stderr), or, with
``--field token``, the bare token alone for a script (no warning). Lookup
and revoke work by accessor (a non-secret id); ``--self`` acts on the token in
use. A token to act on can also be read from stdin (``--token-stdin``), never
from an argument.
"""

from __future__ import annotations

import enum
import math
import sys
from typing import Annotated

import typer

from medsecrets.cli.commands.connection import (
    AddrOption,
    CacertOption,
    OutputOption,
    TokenOption,
    connection,
    open_client,
)
from medsecrets.cli.errors import CliError, ExitCode
from medsecrets.cli.inputs import read_line
from medsecrets.cli.output import (
    OutputFormat,
    emit,
    emit_json,
    kv_table,
    print_table,
    require_result_stream,
    wire,
    write_line,
)
from medsecrets.wire import JSON

__all__ = ["MAX_TTL", "MIN_TTL", "app", "parse_ttl"]

app = typer.Typer(help="Create, look up and revoke tokens.", no_args_is_help=True)

_INFO_KEYS = (
    "accessor",
    "display_name",
    "paths",
    "capabilities",
    "created_at",
    "expires_at",
    "parent",
    "root",
    "emergency",
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CreatedField(enum.StrEnum):
    """``token create --field``: the one field printed bare. Only the token: it is shown
    once, so printing another field alone (its accessor, say) would lose it."""

    token = "token"  # noqa: S105 (a field name, not a password)


MIN_TTL = 1.0
"""Shortest TTL in seconds the server accepts (``medsecrets.auth.tokens.MIN_TTL``)."""
MAX_TTL = 31 * 86400.0
"""Longest TTL in seconds the server accepts (``medsecrets.auth.tokens.MAX_TTL``)."""


def parse_ttl(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d``: ``CliError`` (usage) if
    malformed, not a finite number, or outside the server's range (1 s to 31 days)."""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # also nan, inf, 1e400 (never sent: JSON has no such numbers)
        raise CliError("--ttl expects seconds or a number with s, m, h or d", ExitCode.USAGE)
    if value <= 0:
        raise CliError("--ttl must be positive", ExitCode.USAGE)
    if not MIN_TTL <= value <= MAX_TTL:
        raise CliError("--ttl must be from 1s to 31d", ExitCode.USAGE)
    return value


def _dict(value: object) -> dict[str, JSON]:
    data = wire(value)
    if not isinstance(data, dict):
        raise CliError("unexpected answer from the server")
    return data


def _stdin_token() -> str:
    value = read_line(what="--token-stdin").strip()
    if not value:
        raise CliError("no token on stdin", ExitCode.USAGE)
    return value


def _target(accessor: str | None, self_: bool, token_stdin: bool) -> str:
    chosen = sum((accessor is not None, self_, token_stdin))
    if chosen != 1:
        raise CliError("name exactly one of ACCESSOR, --self or --token-stdin", ExitCode.USAGE)
    return "accessor" if accessor is not None else "self" if self_ else "token"


@app.command("create")
def create(
    *,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", "-p", help="Allowed path prefix (repeatable; * for all)."),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option(
            "--capability",
            "-c",
            help="read, write, list, delete, destroy, generate, sudo, token (repeatable).",
        ),
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", help="Lifetime: seconds, or 30m, 12h, 7d (max 31d).")
    ] = "1h",
    display_name: Annotated[
        str, typer.Option("--display-name", "-n", help="A name for people and logs.")
    ] = "",
    emergency: Annotated[
        bool,
        typer.Option(
            "--emergency",
            help="A break-glass token: its every use is flagged in the audit trail and alerted.",
        ),
    ] = False,
    field: Annotated[
        CreatedField | None,
        typer.Option(
            "--field",
            "-f",
            help="Print only this field's bare value, no warning (for scripts: "
            "TOKEN=$(medsecrets token create ... --field token)); overrides --output.",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Create a token (child of the one in use); prints it ONCE (with --field token: it
    alone, on one line)."""
    if not path or not capability:
        raise CliError("give at least one --path and one --capability", ExitCode.USAGE)
    seconds = parse_ttl(ttl)
    require_result_stream()  # the new token is shown once: only here
    with open_client(connection(addr, token, cacert)) as client:
        created = _dict(
            client.token_create(
                paths=list(path),
                capabilities=list(capability),
                ttl=seconds,
                display_name=display_name,
                emergency=emergency,
            )
        )
    if field is CreatedField.token:
        value = created.get("token")
        if not isinstance(value, str):
            raise CliError("unexpected answer from the server")
        write_line(value)
        return
    if output is OutputFormat.json:
        emit_json(created)
        return
    info = created.get("info")
    sys.stderr.write("WARNING: the token is shown ONCE; store it now (e.g. in a CI secret).\n")
    write_line(f"Token: {created.get('token')}")
    if isinstance(info, dict):
        print_table(kv_table(None, info, keys=_INFO_KEYS))


@app.command("lookup")
def lookup(
    *,
    accessor: Annotated[
        str | None, typer.Argument(help="Accessor of the token.", show_default=False)
    ] = None,
    self_: Annotated[bool, typer.Option("--self", help="The token in use.")] = False,
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="Read the token to look up from stdin.")
    ] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Show a token's facts (never the token). Without arguments: the token in use."""
    if accessor is None and not token_stdin:
        self_ = True
    target = _target(accessor, self_, token_stdin)
    with open_client(connection(addr, token, cacert)) as client:
        if target == "self":
            info = client.token_lookup_self()
        elif target == "accessor":
            info = client.token_lookup(accessor=accessor)
        else:
            info = client.token_lookup(token=_stdin_token())
        data = _dict(info)
    emit(data, output, lambda: print_table(kv_table(None, data, keys=_INFO_KEYS)))


@app.command("revoke")
def revoke(
    *,
    accessor: Annotated[
        str | None, typer.Argument(help="Accessor of the token.", show_default=False)
    ] = None,
    self_: Annotated[bool, typer.Option("--self", help="Revoke the token in use.")] = False,
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="Read the token to revoke from stdin.")
    ] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Revoke a token and every token created from it."""
    target = _target(accessor, self_, token_stdin)
    with open_client(connection(addr, token, cacert)) as client:
        if target == "accessor":
            client.token_revoke(accessor=accessor)
        elif target == "self":
            client.token_revoke(accessor=client.token_lookup_self().accessor)
        else:
            client.token_revoke(token=_stdin_token())
    if output is OutputFormat.json:
        emit_json({"revoked": True})
    else:
        write_line("Revoked (with its children).")
