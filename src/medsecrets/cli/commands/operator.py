"""``medsecrets operator``: initialise, unseal, seal and re-key the server.

``init`` and ``rekey`` print unseal shares and (for init) the root token once,
with a warning on stderr; ``unseal`` reads a share from a hidden prompt, from
stdin (``-`` or a pipe) or — with a warning, since arguments are visible to
other users — from its argument, and shows the progress ``k of n``. It asks the
seal status first: a malformed share is refused before it is sent, an unsealed
server gets none (``Already unsealed``), and a sealed key-file or KMS seal, which
takes no shares, is a usage error saying that a restart of the server unseals it.
``rewrap`` loops over the paged rewrap endpoint with a progress bar.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from medsecrets.cli.commands.connection import (
    AddrOption,
    CacertOption,
    OutputOption,
    TokenOption,
    connection,
    open_client,
)
from medsecrets.cli.errors import CliError, ExitCode, exit_code_for
from medsecrets.cli.inputs import read_line, stdin_is_terminal
from medsecrets.cli.output import (
    OutputFormat,
    emit,
    emit_json,
    kv_table,
    one_line,
    print_table,
    require_result_stream,
    rows_table,
    warn,
    wire,
    write_line,
)
from medsecrets.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequest,
    NotInitializedError,
    PermissionDenied,
    SealedError,
)
from medsecrets.wire import JSON

if TYPE_CHECKING:
    from medsecrets.sdk import Client

__all__ = ["app"]

app = typer.Typer(help="Initialise, unseal, seal and re-key the server.", no_args_is_help=True)

_STATUS_KEYS = (
    "initialized",
    "sealed",
    "seal_type",
    "threshold",
    "shares",
    "progress",
    "term",
    "rekey_pending",
)


def _dict(value: object) -> dict[str, JSON]:
    data = wire(value)
    if not isinstance(data, dict):
        raise CliError("unexpected answer from the server")
    return data


def _print_status(data: dict[str, JSON]) -> None:
    print_table(kv_table("seal status", data, keys=_STATUS_KEYS))


def _print_shares(data: dict[str, JSON], *, what: str) -> None:
    """Print shares (and a root token) once, with the warning on stderr."""
    shares = data.get("shares")
    share_list = [str(s) for s in shares] if isinstance(shares, list) else []
    sys.stderr.write(
        f"WARNING: {what} shown ONCE and never again. Store each unseal share with a "
        "different trusted person, offline; anyone holding the threshold of shares can "
        "unseal the server.\n"
    )
    for i, share in enumerate(share_list, start=1):
        write_line(f"Unseal share {i}: {share}")
    if share_list:
        write_line(f"Threshold: {data.get('threshold')} of {len(share_list)} shares unseal.")
    else:
        write_line(f"Seal type {data.get('seal_type')}: the server unseals itself.")
    token = data.get("root_token")
    if token:
        write_line(f"Root token: {token}")
        sys.stderr.write(
            "WARNING: the root token has every capability. Use it to create narrower "
            "tokens, then revoke it (medsecrets token revoke --self).\n"
        )


@app.command("init")
def init(
    *,
    shares: Annotated[
        int, typer.Option("--shares", min=1, max=16, help="shamir: number of unseal shares.")
    ] = 5,
    threshold: Annotated[
        int, typer.Option("--threshold", min=1, max=16, help="shamir: shares needed to unseal.")
    ] = 3,
    key_file: Annotated[
        str | None,
        typer.Option("--key-file", help="Seal with a key file at this path on the server."),
    ] = None,
    kms_key_id: Annotated[
        str | None, typer.Option("--kms-key-id", help="Seal with this AWS KMS key.")
    ] = None,
    kms_region: Annotated[str, typer.Option("--kms-region", help="AWS region.")] = "us-east-1",
    kms_endpoint: Annotated[
        str | None, typer.Option("--kms-endpoint", help="KMS endpoint URL.", show_default=False)
    ] = None,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Initialise the server: prints the unseal shares and the root token ONCE."""
    from medsecrets.schema.seal import (
        AwsKmsSealConfig,
        KeyFileSealConfig,
        SealConfig,
        ShamirSealConfig,
    )

    seal: SealConfig
    if key_file is not None and kms_key_id is not None:
        raise CliError("use either --key-file or --kms-key-id, not both", ExitCode.USAGE)
    if key_file is not None:
        if not os.path.isabs(key_file):  # a path on the server: this cwd is not the server's
            raise CliError(
                "--key-file must be an absolute path (the key file is on the server)",
                ExitCode.USAGE,
            )
        seal = KeyFileSealConfig(key_file)
    elif kms_key_id is not None:
        seal = AwsKmsSealConfig(kms_key_id, kms_region, kms_endpoint)
    else:
        seal = ShamirSealConfig(shares, threshold)
    require_result_stream()  # the shares and the root token are shown once: only here
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.init(seal))
    emit(data, output, lambda: _print_shares(data, what="the unseal shares and the root token are"))


def _read_secret_line(prompt: str) -> str:
    """One line from stdin when piped, else from a hidden prompt."""
    if stdin_is_terminal():
        value = str(typer.prompt(prompt, hide_input=True))
    else:
        value = read_line(what="stdin")
    value = value.strip()
    if not value:
        raise CliError("no share given", ExitCode.USAGE)
    return value


def _checked_share(value: str) -> str:
    """``value`` stripped, if it is a well-formed share (SLIP-39 words and checksum);
    else a usage error, before the share is sent. Whether it belongs to this store is
    the server's to say."""
    from medsecrets.errors import InvalidShareError
    from medsecrets.seal.shamir import parse_share  # only a share to check needs it

    value = value.strip()
    if not value:
        raise CliError("no share given", ExitCode.USAGE)
    try:
        parse_share(value)
    except InvalidShareError as exc:  # our own message: it never quotes the share
        raise CliError(f"{exc.message} (the share was not sent)", ExitCode.USAGE) from None
    return value


def _given_share(share: str | None) -> str | None:
    """The share of the argument or of a piped stdin, as given (``_checked_share`` checks
    it once the server's seal is known to take shares); None when it is to be asked for
    at a hidden prompt (only then). A closed stdin is a usage error here, at once."""
    if share is not None and share != "-":
        warn(
            "a share given as an argument is visible to other users (ps, shell history); "
            "omit it for a hidden prompt"
        )
        return share
    if stdin_is_terminal():
        return None
    return read_line(what="stdin")


def _unseal_status(client: Client) -> dict[str, JSON]:
    """The seal status, if shares can unseal the server or it is unsealed.

    Not initialised: ``CliError`` (sealed). A key-file or KMS seal takes no shares: the
    server unseals itself at start and, after an operator's seal, refuses to do so again
    until it restarts (``sys/unseal`` with ``{}`` is refused, so as not to undo an
    emergency seal through the port); sealed, that is a usage error saying so."""
    status = _dict(client.seal_status())
    if status.get("initialized") is not True:
        raise CliError("the server is not initialised: run operator init", ExitCode.SEALED)
    kind = status.get("seal_type")
    if kind != "shamir" and status.get("sealed") is not False:
        raise CliError(
            f"the server uses an automatic seal ({one_line(str(kind))}), which takes no "
            "shares: it unseals itself when it starts, so restart the server to unseal it",
            ExitCode.USAGE,
        )
    return status


def _progress_line(data: dict[str, JSON]) -> str:
    if data.get("sealed") is False:
        return "Unsealed."
    return f"Unseal progress: {data.get('progress')} of {data.get('threshold')}"


@app.command("unseal")
def unseal(
    *,
    share: Annotated[
        str | None,
        typer.Argument(
            help="The share; omit it for a hidden prompt, or - to read it from stdin.",
            show_default=False,
        ),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget the shares submitted so far.")
    ] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Submit one unseal share; shows the progress (k of n) until the server unseals.

    A share given (argument, - or a pipe) that is not well-formed is a usage error
    before the server is asked. An unsealed server gets no share: "Already unsealed"
    (exit 0). A key-file or KMS seal takes no shares: sealed, a usage error saying
    that a restart of the server unseals it."""
    if reset and share is not None:
        raise CliError("--reset takes no share", ExitCode.USAGE)
    given = None if reset else _given_share(share)
    with open_client(connection(addr, token, cacert)) as client:
        data = _unseal_status(client)
        if data.get("sealed") is False:
            if data.get("seal_type") != "shamir":
                kind = one_line(str(data.get("seal_type")))
                line = f"Already unsealed: the {kind} seal takes no shares."
            elif given is not None:
                _checked_share(given)  # garbage is refused whatever the seal state
                line = "Already unsealed: the share was not used."
            else:
                line = "Already unsealed."  # no prompt for a share it would not use
        elif reset:
            data = _dict(client.unseal_reset())
            line = _progress_line(data)
        else:
            if given is None:
                given = str(typer.prompt("Unseal share", hide_input=True))
            data = _dict(client.unseal(_checked_share(given)))
            line = _progress_line(data)
    emit(data, output, lambda: write_line(line))


@app.command("seal")
def seal(
    *,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Seal the server: it drops its keys and refuses secret operations until unsealed
    (freed memory is not overwritten: restart it for a clean memory image)."""
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.seal())
    emit(data, output, lambda: write_line("Sealed."))


@app.command("status")
def status(
    *,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Show the seal status (no token needed)."""
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.seal_status())
    emit(data, output, lambda: _print_status(data))


@app.command("rotate")
def rotate(
    *,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Add a new barrier key term (old data stays readable)."""
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.rotate())
    emit(data, output, lambda: print_table(kv_table("keyring", data)))


@app.command("rekey")
def rekey(
    *,
    new_shares: Annotated[
        int, typer.Option("--new-shares", min=1, max=16, help="Number of new shares.")
    ] = 5,
    new_threshold: Annotated[
        int, typer.Option("--new-threshold", min=1, max=16, help="New threshold.")
    ] = 3,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Replace the unseal shares: reads the threshold of current shares (hidden prompts
    or one per line on stdin), prints the new ones ONCE, then verifies them.

    The server keeps the new shares pending until they are verified: only once they
    are printed does this command give them back (``rekey_verify``), so shares it
    could not print never replace the current ones. Either failure is one line
    saying that the old shares still work."""
    require_result_stream()  # the new shares are shown once: only here
    with open_client(connection(addr, token, cacert)) as client:
        status_data = _dict(client.seal_status())
        needed = status_data.get("threshold")
        if status_data.get("seal_type") != "shamir" or not isinstance(needed, int):
            raise CliError("rekey needs a shamir seal", ExitCode.USAGE)
        current = [
            _read_secret_line(f"Current share {i} of {needed}") for i in range(1, needed + 1)
        ]
        data = _dict(client.rekey(current, new_shares=new_shares, new_threshold=new_threshold))
        try:
            emit(data, output, lambda: _print_shares(data, what="the new unseal shares are"))
        except CliError as exc:
            raise CliError(
                f"{exc.message}; the rekey was not verified: the old shares still work",
                exc.exit_code,
            ) from None
        shares = data.get("shares")
        if data.get("verify") is True and isinstance(shares, list):
            try:
                client.rekey_verify([str(s) for s in shares][:new_threshold])
            except Exception as exc:
                raise CliError(_verify_failed(exc), exit_code_for(exc)) from None
            sys.stderr.write(
                "Verified: the new shares now unseal the server; the old ones no longer do.\n"
            )


_REFUSALS = (
    InvalidRequest,  # invalid_share too, and "no rekey is pending"
    ConflictError,
    PermissionDenied,
    AuthenticationError,
    SealedError,
    NotInitializedError,
)
"""Answers to a verification that the server gave before changing anything."""


def _verify_failed(exc: Exception) -> str:
    """The one line for a failed ``rekey_verify``: a refusal left the old shares current;
    any other failure (a lost connection, a 5xx such as the answer's audit record failing)
    may have come after the new shares took effect, so nothing is known."""
    reason = one_line(str(exc))
    if isinstance(exc, _REFUSALS):
        return (
            f"verifying the new shares failed ({reason}): the old shares still work and "
            "the rekey is pending (run operator rekey again)"
        )
    return (
        f"verifying the new shares failed ({reason}) and whether they took effect is "
        "unknown: keep both the old and the new shares until a seal and unseal shows "
        "which set opens the server"
    )


@app.command("rotate-key")
def rotate_key(
    *,
    category: Annotated[str, typer.Argument(help="Catalog category.", show_default=False)],
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Add a new key-encryption-key version for a category (then run rewrap)."""
    with open_client(connection(addr, token, cacert)) as client:
        version = client.rotate_key(category)
    emit(
        {"category": category, "version": version},
        output,
        lambda: write_line(f"Category {category}: new KEK version {version}."),
    )


@app.command("key-versions")
def key_versions(
    *,
    category: Annotated[str, typer.Argument(help="Catalog category.", show_default=False)],
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """List the key-encryption-key versions of a category."""
    with open_client(connection(addr, token, cacert)) as client:
        versions = wire(client.key_versions(category))
    rows = [v for v in versions if isinstance(v, dict)] if isinstance(versions, list) else []
    if output is OutputFormat.json:
        emit_json({"category": category, "versions": rows})
        return
    print_table(
        rows_table(
            f"KEK versions of {category}",
            rows,
            ("version", "created_at", "key_id"),
            headers=("version", "created", "key id"),
        )
    )


@app.command("rewrap")
def rewrap(
    *,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="Secrets per request.")
    ] = 100,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Move every secret's data keys to the newest KEK of its category (resumable)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    totals = {"secrets": 0, "rewrapped": 0, "already_current": 0}
    steps = 0
    with (
        open_client(connection(addr, token, cacert)) as client,
        Progress(
            TextColumn("rewrapping"),
            BarColumn(),
            MofNCompleteColumn(),
            transient=True,
            console=Console(stderr=True),
            disable=not sys.stderr.isatty(),
        ) as progress,
    ):
        task = progress.add_task("rewrap", total=None)
        after: str | None = ""
        while after is not None:
            step = _dict(client.rewrap_step(after=after, limit=limit))
            steps += 1
            for key in totals:
                value = step.get(key)
                totals[key] += value if isinstance(value, int) else 0
            total = step.get("total")
            progress.update(
                task,
                total=total if isinstance(total, int) else None,
                completed=totals["secrets"],
            )
            nxt = step.get("next_after")
            after = nxt if isinstance(nxt, str) else None
    result: dict[str, JSON] = {**totals, "requests": steps}
    if output is OutputFormat.json:
        emit_json(result)
    else:
        write_line(
            f"Rewrapped {totals['rewrapped']} data key(s) of {totals['secrets']} secret(s); "
            f"{totals['already_current']} already current."
        )
