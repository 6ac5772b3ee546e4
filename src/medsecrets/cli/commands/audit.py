"""``medsecrets audit``: HMACs, devices, search, who-read and export (and, from
``auditfiles``, verify, read and analyze).

``hash``, ``devices`` and ``public-key`` ask the server (a token with ``sudo``
on ``sys/audit``). ``search``, ``who-read`` and ``export`` ask the server (its
first readable device: database, else file) or, with ``--file``, read audit
files directly (no server, no token; see ``auditfiles``). Filters are the
server's (``audit.query.AuditQuery``); ``--since``/``--until`` take ISO 8601
dates and times or ages (``parse_time``). Secret values given to ``hash`` are
never echoed; on the command line they are warned about.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from medsecrets.cli.commands import auditfiles
from medsecrets.cli.commands.auditfiles import (
    FileOption,
    KeyFileOption,
    file_records,
    print_records,
    source_name,
)
from medsecrets.cli.commands.connection import (
    AddrOption,
    CacertOption,
    OutputOption,
    TokenOption,
    connection,
    open_client,
)
from medsecrets.cli.errors import CliError, ExitCode
from medsecrets.cli.inputs import read_text
from medsecrets.cli.output import (
    OutputFormat,
    emit,
    note,
    print_table,
    result_stream,
    rows_table,
    warn,
    wire,
    write_line,
)
from medsecrets.schema.audit import AuditRead, AuditReads, AuditRecords

if TYPE_CHECKING:
    from medsecrets.audit.query import AuditQuery
    from medsecrets.sdk import Client

__all__ = ["MAX_SERVER_LIMIT", "app", "parse_time"]

MAX_SERVER_LIMIT: Final = 10_000
"""The most records the server sends for one search."""

app = typer.Typer(help="Query, export, verify and analyze the audit trail.", no_args_is_help=True)


class Outcome(enum.StrEnum):
    """``--outcome``."""

    success = "success"
    denied = "denied"
    error = "error"
    failure = "failure"


class Kind(enum.StrEnum):
    """``--kind``."""

    request = "request"
    response = "response"
    checkpoint = "checkpoint"
    alert = "alert"


class ExportFormat(enum.StrEnum):
    """``--format`` of ``search``/``export``: a SIEM format (``audit.export``)."""

    jsonl = "jsonl"
    csv = "csv"
    cef = "cef"


# -- options ---------------------------------------------------------------------------------
_FILTERS = "Filters"

PrincipalOption = Annotated[
    str | None,
    typer.Option(
        "--principal",
        help="Principal (token display name or id) or accessor (hmac-sha256:...).",
        show_default=False,
        rich_help_panel=_FILTERS,
    ),
]
PathPrefixOption = Annotated[
    str | None,
    typer.Option(
        "--path-prefix",
        help="Secret path or a prefix of whole segments.",
        show_default=False,
        rich_help_panel=_FILTERS,
    ),
]
CategoryOption = Annotated[
    str | None,
    typer.Option(
        "--category", help="Secret category.", show_default=False, rich_help_panel=_FILTERS
    ),
]
EnvironmentOption = Annotated[
    str | None,
    typer.Option(
        "--environment", help="Environment.", show_default=False, rich_help_panel=_FILTERS
    ),
]
OperationOption = Annotated[
    str | None,
    typer.Option(
        "--operation",
        help="Operation (route name, e.g. secrets.read).",
        show_default=False,
        rich_help_panel=_FILTERS,
    ),
]
OutcomeOption = Annotated[
    Outcome | None,
    typer.Option("--outcome", help="Outcome.", show_default=False, rich_help_panel=_FILTERS),
]
KindOption = Annotated[
    Kind | None,
    typer.Option("--kind", help="Record kind.", show_default=False, rich_help_panel=_FILTERS),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="From this time (inclusive): ISO 8601 date or time (UTC unless it says), or an "
        "age such as 30m, 12h, 7d.",
        show_default=False,
        rich_help_panel=_FILTERS,
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="Before this time (exclusive): like --since.",
        show_default=False,
        rich_help_panel=_FILTERS,
    ),
]


# -- shared helpers --------------------------------------------------------------------------
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_AGE_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(
    option: str, text: str | None, *, now: dt.datetime | None = None
) -> dt.datetime | None:
    """``--since``/``--until``: an aware datetime, or ``None`` when not given.

    Accepts ISO 8601 dates (midnight UTC) and times (UTC unless they carry an
    offset or ``Z``), or an age before ``now`` (``90s``, ``30m``, ``12h``,
    ``7d``). Raises ``CliError`` (usage) naming the option otherwise.
    """
    if text is None:
        return None
    age = _AGE.fullmatch(text.strip())
    try:
        if age is not None:
            seconds = float(age.group(1)) * _AGE_UNITS[age.group(2)]
            return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"{option}: expected an ISO 8601 date or time (2025-03-01, 2025-03-01T12:00:00Z) "
            "or an age such as 30m, 12h or 7d",
            ExitCode.USAGE,
        ) from None
    except OverflowError:
        raise CliError(f"{option}: the age is out of range", ExitCode.USAGE) from None
    value = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    try:
        value.astimezone(dt.UTC).timestamp()
    except (OverflowError, ValueError, OSError):
        raise CliError(f"{option}: the time is out of range", ExitCode.USAGE) from None
    return value


def _query(
    *,
    principal: str | None,
    path_prefix: str | None,
    category: str | None,
    environment: str | None,
    operation: str | None,
    outcome: Outcome | None,
    kind: Kind | None,
    since: str | None,
    until: str | None,
) -> AuditQuery:
    """The ``AuditQuery`` of the filter options (times parsed); an operation no record can
    name is a usage error listing the ones there are."""
    from medsecrets.audit.query import AuditQuery
    from medsecrets.errors import InvalidRequest

    try:
        return AuditQuery(
            principal=principal,
            path_prefix=path_prefix,
            category=category,
            environment=environment,
            operation=operation,
            outcome=None if outcome is None else outcome.value,
            kind=None if kind is None else kind.value,
            since=parse_time("--since", since),
            until=parse_time("--until", until),
        )
    except InvalidRequest as exc:
        raise CliError(exc.message, ExitCode.USAGE) from None


_STDOUT_NAMES: Final = frozenset({"-", "/dev/stdout"})


def _export(records: Iterable[Mapping[str, object]], fmt: ExportFormat, out: Path | None) -> int:
    """Write ``records`` in ``fmt`` to ``out`` or stdout; the count.

    ``out`` is created 0600 and appears only once every record is in it: the
    records go to a new hidden file beside it, which is then linked as ``out``
    (so an existing file is never replaced: that is an error, and so is a
    failure halfway, which leaves nothing behind). A FIFO or a character
    device is written to as it is; ``-`` and ``/dev/stdout`` are stdout, wherever
    the shell sent it (a file included).
    """
    from medsecrets.audit.export import export

    if out is None or str(out) in _STDOUT_NAMES:
        with result_stream() as stream:
            return export(records, fmt.value, stream)
    try:
        status = out.stat()
    except FileNotFoundError:
        status = None
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}", ExitCode.USAGE) from None
    if status is not None:
        if stat.S_ISFIFO(status.st_mode) or stat.S_ISCHR(status.st_mode):
            return _export_to(records, fmt, out, out)
        raise CliError(f"cannot write {out}: it exists already (give a new file)", ExitCode.USAGE)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}", ExitCode.USAGE) from None
    os.close(fd)
    partial = Path(name)
    try:
        count = _export_to(records, fmt, partial, out)
        try:
            os.link(partial, out)
        except OSError as exc:
            raise CliError(f"cannot write {out}: {exc.strerror}", ExitCode.USAGE) from None
    finally:
        partial.unlink(missing_ok=True)
    return count


def _export_to(
    records: Iterable[Mapping[str, object]], fmt: ExportFormat, target: Path, out: Path
) -> int:
    """``export`` into ``target`` (named ``out`` in errors), flushed to disk."""
    from medsecrets.audit.export import export

    try:
        with target.open("w", encoding="utf-8", newline="") as handle:
            count = export(records, fmt.value, handle)
            handle.flush()
            if target.is_file():
                os.fsync(handle.fileno())
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}", ExitCode.OTHER) from None
    return count


def _server_search(client: Client, query: AuditQuery, limit: int) -> AuditRecords:
    """``query`` asked of the server (its first readable device)."""
    return client.audit_search(
        principal=query.principal,
        path_prefix=query.path_prefix,
        category=query.category,
        environment=query.environment,
        operation=query.operation,
        outcome=query.outcome,
        kind=query.kind,
        since=query.since,
        until=query.until,
        limit=limit,
    )


def _find(
    files: Sequence[Path] | None,
    key_file: Path | None,
    query: AuditQuery,
    limit: int,
    conn: tuple[str | None, str | None, str | None],
) -> AuditRecords:
    """At most ``limit`` records matching ``query``: from ``files``, or from the server."""
    if files:
        from medsecrets.audit.query import search

        found = tuple(itertools.islice(search(file_records(files, key_file), query), limit + 1))
        return AuditRecords(
            device=source_name(files), records=found[:limit], truncated=len(found) > limit
        )
    _server_side(key_file)
    with open_client(connection(*conn)) as client:  # the server sends 10,000 at most
        return _server_search(client, query, min(limit, MAX_SERVER_LIMIT))


def _warn_unreadable(count: int) -> None:
    """Say that the server left lines of its log out of an answer (``unreadable``)."""
    if count:
        warn(
            f"{count} line(s) of the server's audit log could not be read and were left out "
            "(`medsecrets audit verify` says where)"
        )


def _server_side(key_file: Path | None) -> None:
    """Refuse ``--key-file`` when the server is asked (it reads its own devices)."""
    if key_file is not None:
        raise CliError("--key-file is for audit files: give --file too", ExitCode.USAGE)


# -- server commands -------------------------------------------------------------------------
def _stdin_value() -> str:
    """The value on stdin, one trailing line break dropped."""
    text = read_text("-", what="audit hash")
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise CliError("stdin: no value to hash", ExitCode.USAGE)
    return text


@app.command("hash")
def hash_(
    *,
    value: Annotated[
        str,
        typer.Argument(
            help="The value (visible to other users!), or - to read it from stdin (one "
            "trailing line break dropped).",
            show_default=False,
        ),
    ],
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="Device whose HMAC key to use (default: the first).",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Print the hmac-sha256:... an audit device writes for a value (to search the log)."""
    from medsecrets.sensitive import Sensitive

    if value == "-":
        value = _stdin_value()
    else:
        warn(
            "a value given on the command line is visible to other users (ps, shell history); "
            "prefer - (the value on stdin)"
        )
    with open_client(connection(addr, token, cacert)) as client:
        result = client.audit_hash(Sensitive(value), device=device)
    emit(result, output, lambda: write_line(result.hash))


_DEVICE_COLUMNS: Final = (
    "name", "required", "up", "records", "failures", "dropped", "pending", "seq", "last_error",
    "spool_pending", "delivery_error", "delivery_failures", "last_delivered_at",
)  # fmt: skip


@app.command("devices")
def devices(
    *,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """The server's audit devices and their health."""
    with open_client(connection(addr, token, cacert)) as client:
        found = wire(client.audit_devices())
    rows = [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []
    emit(
        {"devices": rows},
        output,
        lambda: print_table(rows_table(None, rows, _DEVICE_COLUMNS)),
    )


@app.command("public-key")
def public_key(
    *,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Print the Ed25519 key (PEM) that signs audit checkpoints, for verify --public-key."""
    with open_client(connection(addr, token, cacert)) as client:
        key = client.audit_public_key()
    emit(key, output, lambda: write_line(key.public_key_pem.rstrip("\n")))


# -- queries (server or --file) --------------------------------------------------------------
@app.command("search")
def search(
    *,
    principal: PrincipalOption = None,
    path_prefix: PathPrefixOption = None,
    category: CategoryOption = None,
    environment: EnvironmentOption = None,
    operation: OperationOption = None,
    outcome: OutcomeOption = None,
    kind: KindOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Most records (the server allows 10,000).")
    ] = 100,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format", help="Print as jsonl, csv or cef instead of --output.", show_default=False
        ),
    ] = None,
    files: FileOption = None,
    key_file: KeyFileOption = None,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Audit records matching every filter given, oldest first."""
    query = _query(
        principal=principal, path_prefix=path_prefix, category=category,
        environment=environment, operation=operation, outcome=outcome, kind=kind,
        since=since, until=until,
    )  # fmt: skip
    found = _find(files, key_file, query, limit, (addr, token, cacert))
    _warn_unreadable(found.unreadable)
    if found.truncated:
        shown = len(found.records)
        more = "raise --limit" if shown == limit else "use --file or narrower filters"
        warn(f"more records match: showing the first {shown} ({more})")
    if fmt is not None:
        _export(found.records, fmt, None)
        return
    emit(found, output, lambda: print_records(found.device, found.records))


@app.command("export")
def export(
    *,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl, csv or cef (ArcSight CEF).")
    ] = ExportFormat.jsonl,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-O",
            help="Write here (a new file is created 0600), not stdout.",
            show_default=False,
        ),
    ] = None,
    principal: PrincipalOption = None,
    path_prefix: PathPrefixOption = None,
    category: CategoryOption = None,
    environment: EnvironmentOption = None,
    operation: OperationOption = None,
    outcome: OutcomeOption = None,
    kind: KindOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            help="Most records (default: every match; the server sends 10,000 at most).",
            show_default=False,
        ),
    ] = None,
    files: FileOption = None,
    key_file: KeyFileOption = None,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Export audit records for a SIEM: JSON lines, CSV or CEF (files are streamed)."""
    from medsecrets.audit.query import search as matching

    query = _query(
        principal=principal, path_prefix=path_prefix, category=category,
        environment=environment, operation=operation, outcome=outcome, kind=kind,
        since=since, until=until,
    )  # fmt: skip
    records: Iterable[Mapping[str, object]]
    if files:
        records = matching(file_records(files, key_file), query)
        if limit is not None:
            records = itertools.islice(records, limit)
    else:
        found = _find(None, key_file, query, limit or MAX_SERVER_LIMIT, (addr, token, cacert))
        _warn_unreadable(found.unreadable)
        if found.truncated:
            warn(
                f"more records match: exported the first {len(found.records)} (use --file "
                "or narrower filters)"
            )
        records = found.records
    count = _export(records, fmt, out)
    if out is not None:
        note(f"Exported {count} record(s) to {out} ({fmt.value}).")


_READ_COLUMNS: Final = (
    "time", "principal", "accessor", "remote", "user_agent", "version", "request_id",
)  # fmt: skip


@app.command("who-read")
def who_read(
    *,
    path: Annotated[str, typer.Argument(help="Secret path.", show_default=False)],
    since: SinceOption = None,
    files: FileOption = None,
    key_file: KeyFileOption = None,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Every successful read of a secret (every version): by whom, from where, when."""
    import dataclasses

    from medsecrets.audit.query import who_read as reads_of
    from medsecrets.audit.record import format_time

    when = parse_time("--since", since)
    if files:  # offline: the naming rules, but any prefix and category (no catalog here)
        from medsecrets.engines.secrets.paths import check_segments
        from medsecrets.errors import InvalidRequest

        try:
            segments = check_segments(path)
        except InvalidRequest as exc:
            raise CliError(str(exc), ExitCode.USAGE) from None
        if len(segments) < 3:
            raise CliError(
                "PATH must look like <prefix>/<environment>/<category>[/<name>]", ExitCode.USAGE
            )
        path = "/".join(segments)
        rows = reads_of(file_records(files, key_file), path, when)
        found = AuditReads(
            device=source_name(files),
            path=path,
            reads=tuple(
                AuditRead(**{**dataclasses.asdict(row), "time": format_time(row.time)})
                for row in rows
            ),
        )
    else:
        _server_side(key_file)
        with open_client(connection(addr, token, cacert)) as client:
            found = client.audit_who_read(path, since=when)
        _warn_unreadable(found.unreadable)

    def show() -> None:
        data = wire(found.reads)
        rows = [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []
        print_table(
            rows_table(f"reads of {found.path}", rows, _READ_COLUMNS,
                       headers=("time", "principal", "token accessor", "from", "user agent",
                                "version", "request")),
            f"{len(rows)} read(s)",
        )  # fmt: skip

    emit(found, output, show)


auditfiles.register(app)
