"""Audit files, offline: ``medsecrets audit verify | read | analyze``, and the readers of
``search``/``who-read``/``export --file``.

Nothing here needs a server or a token (except ``verify --public-key -``,
which fetches the checkpoint key from the server). Files are given oldest
first. ``--key-file`` (the audit log encryption key, 64 hex digits) opens the
sealed lines of an encrypted file device; other lines are taken as they are
(``crypt.is_sealed``), and a sealed record met without the key is an error.
Key files (``--key-file``, ``--public-key``) are read with ``cli.inputs`` up to
``KEY_FILE_LIMIT`` bytes; audit and checkpoint files a line at a time, each up
to ``readback.MAX_LINE_BYTES``.

Errors: an input file that cannot be read or is not what it should be (not
an audit record, not a key) is a usage error (exit 2) naming the file and
line, never its content. ``verify`` exits ``EXIT_VERIFY_FAILED`` (7) with one
line naming the first bad record; ``analyze`` exits 0 whatever it finds
(alerts are findings, not errors).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

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
from medsecrets.cli.inputs import read_text
from medsecrets.cli.output import (
    OutputFormat,
    emit,
    emit_json,
    error,
    print_table,
    result_stream,
    rows_table,
    warn,
    wire,
    write_line,
)
from medsecrets.errors import ConfigError, InvalidRequest
from medsecrets.wire import JSON

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from medsecrets.audit.crypt import RecordCipher
    from medsecrets.audit.verify import VerifyReport
    from medsecrets.monitor.analyze import AnalysisReport
    from medsecrets.monitor.detectors import DetectorConfig

__all__ = [
    "EXIT_VERIFY_FAILED",
    "KEY_FILE_LIMIT",
    "READ_TABLE_LIMIT",
    "FileOption",
    "KeyFileOption",
    "file_records",
    "print_records",
    "reading",
    "register",
    "source_name",
]

EXIT_VERIFY_FAILED: Final = int(ExitCode.VERIFY_FAILED)
"""``audit verify`` found a modified, missing, reordered or inserted record."""
KEY_FILE_LIMIT: Final = 4096
"""The most bytes read of ``--key-file`` and ``--public-key`` (a key or a PEM is far less)."""
READ_TABLE_LIMIT: Final = 10_000
"""The most records ``read -o table`` shows (a table is laid out whole, so its rows are held
in memory): more is a usage error suggesting ``-o jsonl`` or ``--limit``."""


class LogFormat(enum.StrEnum):
    """``analyze --format``: whose log (default: sniffed per file)."""

    ours = "ours"
    cloudtrail = "cloudtrail"
    vault = "vault"


class ReadFormat(enum.StrEnum):
    """``read --output``: JSON lines (the records as stored), a JSON array, or a table."""

    jsonl = "jsonl"
    json = "json"
    table = "table"


_OFFLINE = "Offline (audit files)"

FileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--file",
        "-f",
        help="Read this audit file instead of asking the server (repeatable; a quoted "
        "pattern such as 'audit*.jsonl' reads every match). Each chain's files (a worker's "
        "audit-<pid>.jsonl and its rotated files) are read in chain order, the chains "
        "merged by time, as the server does.",
        show_default=False,
        rich_help_panel=_OFFLINE,
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="File holding the audit log encryption key (64 hex digits) of an encrypted file "
        "device.",
        show_default=False,
        rich_help_panel=_OFFLINE,
    ),
]
FilesArg = Annotated[
    list[Path], typer.Argument(help="Audit files, oldest first.", show_default=False)
]


@contextmanager
def reading() -> Iterator[None]:
    """Turn an unreadable or malformed input file into one usage error naming it."""
    from medsecrets.audit.record import LineError

    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        name = exc.filename if exc.filename is not None else "an input file"
        raise CliError(f"cannot read {name}: {reason}", ExitCode.USAGE) from None
    except LineError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None


def _cipher(key_file: Path | None) -> RecordCipher | None:
    """The cipher of ``--key-file`` (never echoes the file's content)."""
    if key_file is None:
        return None
    from medsecrets.audit.crypt import RecordCipher

    text = read_text(str(key_file), what="--key-file", limit=KEY_FILE_LIMIT)
    try:
        return RecordCipher.from_hex(text)
    except ConfigError:
        raise CliError(
            f"--key-file {key_file}: expected an AES-256 key as 64 hex digits", ExitCode.USAGE
        ) from None


def expand_patterns(files: Sequence[Path]) -> list[Path]:
    """``files`` with each pattern (``*``, ``?``, ``[``: quoted, so the shell left it)
    replaced by the files it matches in name order, which is chain order for one device's
    files (rotated ``<stem>-<stamp>-<seq>`` before the live ``<stem>.jsonl``)."""
    import glob

    found: list[Path] = []
    for given in files:
        text = str(given)
        if given.exists() or not glob.has_magic(text):
            found.append(given)
            continue
        matches = sorted(glob.glob(text))
        if not matches:
            raise CliError(
                f"cannot read {text}: no such file, and no file matches it as a pattern",
                ExitCode.USAGE,
            )
        found.extend(Path(match) for match in matches)
    return found


_GZIP_MAGIC: Final = b"\x1f\x8b"


def check_plain_files(paths: Iterable[Path]) -> None:
    """Refuse, before any record is read, an input that is not a regular file or is
    gzip-compressed: a usage error naming it.

    The record readers open what they are given as it is: a FIFO would hold the command
    for ever (no writer) and a device be read without end, and a compressed file's first
    line reads as a bad record (``verify`` would report tampering). Each file is opened
    (``fdio.open_regular``: never blocks) and closed again, one at a time.
    """
    from medsecrets.fdio import open_regular

    with reading():
        for path in paths:
            with open_regular(path) as handle:
                compressed = handle.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
            if compressed:
                raise CliError(
                    f"{path}: gzip-compressed: decompress it first (gunzip -k); only "
                    "`audit analyze` reads gzip",
                    ExitCode.USAGE,
                )


def file_records(files: Sequence[Path], key_file: Path | None) -> Iterator[dict[str, object]]:
    """Every record of ``files``, oldest first, as the server reads a device: the files
    grouped into chains (a worker's, a node's, a device's: ``readback.given_chains``), each
    chain read in chain order, the chains merged by record time, a chain opened only once
    the merge reaches its first record (``readback.merged_in_turn``: a glob of thousands of
    files of many runs keeps open only the files of chains that overlap in time). A sealed
    record without ``--key-file`` is a usage error."""
    from functools import partial

    from medsecrets.audit.crypt import SEALED_KIND
    from medsecrets.audit.query import read_records
    from medsecrets.audit.readback import chain_start, given_chains, line_decoder, merged_in_turn

    decode = line_decoder(_cipher(key_file))
    paths = expand_patterns(files)
    check_plain_files(paths)
    with reading():
        chains = [
            (chain_start(chain, decode=decode), partial(read_records, chain, decode=decode))
            for chain in given_chains(paths)
        ]
        for record in merged_in_turn(chains):
            if record.get("kind") == SEALED_KIND:
                raise CliError("the audit file is encrypted: give --key-file", ExitCode.USAGE)
            yield record


def source_name(files: Sequence[Path]) -> str:
    """The files as one ``source``/``device`` label of a result."""
    return ", ".join(str(f) for f in files)


def _record_row(record: Mapping[str, object]) -> dict[str, JSON]:
    """A search table row: alerts show their detector, principal, path and source."""
    from medsecrets.audit.query import record_field

    alert = record.get("alert")
    detector = alert.get("detector") if isinstance(alert, Mapping) else None
    operation = record.get("operation") or (f"alert:{detector}" if detector else None)
    row: dict[str, object] = {
        "time": record.get("time"),
        "kind": record.get("kind"),
        "principal": record_field(record, "principal"),
        "operation": operation,
        "path": record_field(record, "path"),
        "outcome": record.get("outcome"),
        "status": record.get("status"),
        "remote": record_field(record, "remote"),
    }
    return {
        k: v if isinstance(v, str | int | bool) or v is None else str(v) for k, v in row.items()
    }


_RECORD_COLUMNS: Final = (
    "time", "kind", "principal", "operation", "path", "outcome", "status", "remote",
)  # fmt: skip


def print_records(title: str, records: Iterable[Mapping[str, object]]) -> None:
    """A table of records (time, kind, principal, operation, path, outcome, status, remote)."""
    _print_rows(title, [_record_row(r) for r in records])


def _print_rows(title: str, rows: Sequence[Mapping[str, JSON]]) -> None:
    print_table(rows_table(title, rows, _RECORD_COLUMNS), f"{len(rows)} record(s)")


# -- offline: verify, read, analyze ----------------------------------------------------------
@contextmanager
def _byte_progress(files: Sequence[Path], label: str) -> Iterator[Callable[[int], None] | None]:
    """A byte progress bar over ``files`` on stderr when it is a terminal (POSIX): yields
    its ``advance(bytes)``, or ``None`` when no bar is shown."""
    if not sys.stderr.isatty() or os.name != "posix":
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    total = sum(f.stat().st_size for f in files)
    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.advance(task, done)


def _load_public_key(
    source: str | None, conn: tuple[str | None, str | None, str | None]
) -> tuple[Ed25519PublicKey, str] | None:
    """``--public-key``: the key and its id, from a PEM/hex file or (``-``) the server."""
    if source is None:
        return None
    from medsecrets.audit.checkpoint import key_id_of, load_public_key

    if source == "-":
        with open_client(connection(*conn)) as client:
            pem = client.audit_public_key().public_key_pem.encode()
    else:
        pem = read_text(source, what="--public-key", limit=KEY_FILE_LIMIT).encode()
    try:
        key = load_public_key(pem)
    except InvalidRequest:
        raise CliError(
            f"--public-key {source}: not an Ed25519 public key (PEM or 64 hex digits)",
            ExitCode.USAGE,
        ) from None
    return key, key_id_of(key)


def _exported(path: Path | None, node: str | None, device: str | None) -> list[dict[str, object]]:
    """``--checkpoints``: the exported checkpoint records (of ``node``/``device`` if given).

    A filter that leaves none of the file's checkpoints is a usage error naming what the
    file holds: the tail check the user asked for would be skipped (a mistyped node, a
    worker's ``<node>-<pid>``). ``--node``/``--device`` without ``--checkpoints`` too.
    """
    if path is None:
        if node is not None or device is not None:
            raise CliError(
                "--node and --device (with FILES) choose among exported checkpoints: "
                "give --checkpoints too",
                ExitCode.USAGE,
            )
        return []
    from medsecrets.audit.checkpoint import read_checkpoints

    with reading():
        every = read_checkpoints(path)
    chosen = [
        record
        for record in every
        if (node is None or record.get("node") == node)
        and (device is None or record.get("device") == device)
    ]
    if every and not chosen:
        wanted = " and ".join(
            f"{name} {value!r}" for name, value in (("node", node), ("device", device)) if value
        )
        held = sorted({(repr(r.get("node")), repr(r.get("device"))) for r in every})
        shown = ", ".join(f"node {n} device {d}" for n, d in held[:_HELD_SHOWN])
        more = f" and {len(held) - _HELD_SHOWN} more" if len(held) > _HELD_SHOWN else ""
        raise CliError(
            f"--checkpoints {path}: none of its {len(every)} checkpoint(s) is of {wanted}, so "
            f"the tail could not be checked (it holds {shown}{more})",
            ExitCode.USAGE,
        )
    return chosen


_HELD_SHOWN: Final = 5
"""The chains a ``--checkpoints`` error lists at most."""


def _verify_data(report: VerifyReport, files: Sequence[Path], exported: int) -> dict[str, JSON]:
    """The JSON result of ``verify``."""
    first = report.last_seq - report.records + 1 if report.ok and report.records else None
    return {
        "ok": report.ok,
        "files": [str(f) for f in files],
        "records": report.records,
        "first_seq": first,
        "last_seq": report.last_seq,
        "last_hash": report.last_hash,
        "checkpoints_verified": report.checkpoints_verified,
        "exported_checkpoints": exported,
        "sealed_unchecked": report.sealed,
        "plain_stretches": report.plain_stretches,
        "plain_stretch_records": report.plain_stretch_records,
        "file": None if report.file is None else str(report.file),
        "first_bad_index": report.first_bad_index,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problem,
    }


NO_START: Final = (
    "no record: --from-start needs the chain's first record (seq 1), and a log emptied "
    "after the fact looks the same"
)


def _started(report: VerifyReport, files: Sequence[Path]) -> VerifyReport:
    """``report`` of ``verify --from-start``, failed at the first file's first line when
    the files hold no record: they cannot show that they start the chain (a log wiped
    down to nothing verifies as empty), so they are not vouched for as the whole log."""
    if not report.ok or report.records or not files:
        return report
    return dataclasses.replace(
        report, ok=False, first_bad_index=0, first_bad_seq=1, problem=NO_START, file=files[0]
    )


def _bad_record(report: VerifyReport, checkpoints: Path | None) -> str:
    """The one line that names the first bad record."""
    seq = f", seq {report.first_bad_seq}" if report.first_bad_seq is not None else ""
    if report.first_bad_index is None:
        return f"verification failed: exported checkpoints {checkpoints}{seq}: {report.problem}"
    where = report.file if report.file is not None else "log"
    index = report.first_bad_index
    return (
        f"verification failed: {where} line index {index} (line {index + 1}){seq}: {report.problem}"
    )


def _print_verified(
    data: Mapping[str, JSON], key_id: str | None, from_start: bool, checkpoints: Path | None
) -> None:
    """The summary of a clean ``verify``: what was checked, and what was not."""
    files = data["files"]
    count = len(files) if isinstance(files, list) else 0
    if data["records"]:
        write_line(
            f"OK: {data['records']} record(s) in {count} file(s), seq {data['first_seq']}"
            f" to {data['last_seq']}: the chain is intact."
        )
    else:
        write_line(f"OK: no record in {count} file(s): nothing to check.")
    if key_id is not None:
        write_line(
            f"Checkpoint signatures: {data['checkpoints_verified']} verified (key {key_id}); "
            "every record but the last few is vouched for by one."
        )
    else:
        write_line("Checkpoint signatures: not checked (give --public-key).")
    if data["exported_checkpoints"]:
        write_line(
            f"Exported checkpoints: {data['exported_checkpoints']} given, all consistent with "
            "the log."
        )
    elif checkpoints is not None:
        write_line(f"Exported checkpoints: {checkpoints} holds none: the tail was not checked.")
    else:
        write_line("Exported checkpoints: none given (--checkpoints detects a truncated tail).")
    if not from_start and data["first_seq"] not in (None, 1):
        write_line(
            f"Chain start: trusted at seq {data['first_seq']} (rotated files before it are not "
            "checked; --from-start requires the log to start the chain)."
        )
    if data["sealed_unchecked"]:
        write_line(
            f"Encrypted records: {data['sealed_unchecked']} checked for their place in the "
            "chain only (give --key-file to check their content)."
        )
    if data["plain_stretches"]:
        write_line(
            f"Plain stretches: {data['plain_stretches']} after encrypted records "
            f"({data['plain_stretch_records']} record(s)), accepted as the sealed spells of "
            "later starts: they hold no HMAC, principal or checkpoint, as only a sealed store "
            "writes plain; --key-file checks that the encrypted records after them follow them."
        )


def verify(
    *,
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Audit files, oldest first (none: with --device, the server verifies it).",
            show_default=False,
        ),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Checkpoint signing key: a PEM (or hex) file, or - to fetch it from the server.",
            show_default=False,
        ),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="Exported checkpoints (JSON lines): detects a truncated tail.",
            show_default=False,
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node", help="Use only the exported checkpoints of this node.", show_default=False
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="Without FILES: have the server verify this device (file or database). "
            "With FILES: use only the exported checkpoints of this device.",
            show_default=False,
        ),
    ] = None,
    key_file: KeyFileOption = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="The first file must start the chain (seq 1).")
    ] = False,
    unsigned_tail: Annotated[
        int | None,
        typer.Option(
            "--unsigned-tail",
            min=0,
            help="With --public-key: most records allowed after the last signed checkpoint "
            "(default 1001: the server's default audit.checkpoint_every + 1; 0: no limit).",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Check audit files (or, with --device alone, a device on the server) for tampering.

    Exits 7 naming the first bad record.
    """
    from medsecrets.audit.device import ChainHead
    from medsecrets.audit.readback import line_decoder
    from medsecrets.audit.verify import UNSIGNED_TAIL, verify_files
    from medsecrets.workers import worker_count

    if not files:
        if device is None:
            raise CliError(
                "give audit FILES, or --device NAME for the server to verify", ExitCode.USAGE
            )
        _offline_only(
            ("--public-key", public_key is not None), ("--checkpoints", checkpoints is not None),
            ("--node", node is not None), ("--key-file", key_file is not None),
            ("--from-start", from_start), ("--unsigned-tail", unsigned_tail is not None),
        )  # fmt: skip
        _verify_on_server(device, output, (addr, token, cacert))
        return
    check_plain_files(files)
    loaded = _load_public_key(public_key, (addr, token, cacert))
    exported = _exported(checkpoints, node, device)
    decode = line_decoder(_cipher(key_file))
    workers = 0 if decode is not None else worker_count(None, files)  # a key stays here
    with reading(), _byte_progress(files, "verifying") as advance:
        report = verify_files(
            files,
            workers=workers,
            progress=advance,
            public_key=None if loaded is None else loaded[0],
            checkpoints=exported,
            start=ChainHead() if from_start else None,
            decode=decode,
            unsigned_tail=UNSIGNED_TAIL if unsigned_tail is None else unsigned_tail,
        )
    if from_start:
        report = _started(report, files)
    data = _verify_data(report, files, len(exported))
    if report.ok:
        key_id = None if loaded is None else loaded[1]
        emit(data, output, lambda: _print_verified(data, key_id, from_start, checkpoints))
        return
    if output is OutputFormat.json:
        emit_json(data)
    error(_bad_record(report, checkpoints))
    raise typer.Exit(EXIT_VERIFY_FAILED)


def _offline_only(*given: tuple[str, bool]) -> None:
    """Refuse the options of an offline ``verify`` given to ``verify --device``: the server
    checks its device with its own key and exported checkpoints, so a check the user asked
    for (their saved key, the checkpoints they keep elsewhere) would be skipped quietly."""
    named = [option for option, present in given if present]
    if named:
        raise CliError(
            f"{', '.join(named)}: for audit FILES verified here; --device alone has the server "
            "verify its device (with its own key and exported checkpoints)",
            ExitCode.USAGE,
        )


def _verify_on_server(
    device: str, output: OutputFormat, conn: tuple[str | None, str | None, str | None]
) -> None:
    """``audit verify --device NAME``: the server checks the device's chain and checkpoints."""
    from medsecrets.wire import to_wire

    with open_client(connection(*conn)) as client:
        result = client.audit_verify(device=device)
    data = to_wire(result)
    assert isinstance(data, dict)
    if result.ok:
        emit(
            data,
            output,
            lambda: write_line(
                f"ok: device {result.device}: {result.records} records up to seq "
                f"{result.last_seq}, {result.checkpoints_verified} signed checkpoints verified"
            ),
        )
        return
    if output is OutputFormat.json:
        emit_json(data)
    where = (
        f"record index {result.first_bad_index}"
        if result.first_bad_index is not None
        else "exported checkpoints"
    )
    seq = f", seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    error(f"verification failed: device {result.device} {where}{seq}: {result.problem}")
    raise typer.Exit(EXIT_VERIFY_FAILED)


def read(
    *,
    files: FilesArg,
    key_file: Annotated[
        Path,
        typer.Option(
            "--key-file",
            help="File holding the audit log encryption key (64 hex digits).",
            show_default=False,
        ),
    ],
    output: Annotated[
        ReadFormat,
        typer.Option(
            "--output",
            "-o",
            help="jsonl (one record per line) or json (an array), both streamed; or table "
            f"(at most {READ_TABLE_LIMIT:,} records).",
        ),
    ] = ReadFormat.jsonl,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Most records, oldest first (default: all).", show_default=False
        ),
    ] = None,
) -> None:
    """Decrypt an encrypted file device and print its records (offline), oldest first.

    ``jsonl`` and ``json`` stream: memory stays bounded whatever the size of the log.
    ``jsonl`` is a stream of whole lines: an unreadable line met midway ends it there
    (exit 2, the lines before it printed). ``json`` is one document, printed whole or
    not at all: the files are read twice, first to check every line (an unreadable one
    is exit 2 with nothing printed), then to print (``_write_checked_array``). A table
    is laid out whole: more than ``READ_TABLE_LIMIT`` records is a usage error before
    anything is printed.
    """

    def records() -> Iterator[dict[str, object]]:
        found = file_records(files, key_file)
        return found if limit is None else itertools.islice(found, limit)

    if output is ReadFormat.jsonl:
        for record in records():
            write_line(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    elif output is ReadFormat.json:
        _write_checked_array(records)
    else:
        rows = [_record_row(r) for r in itertools.islice(records(), READ_TABLE_LIMIT + 1)]
        if len(rows) > READ_TABLE_LIMIT:
            raise CliError(
                f"-o table shows at most {READ_TABLE_LIMIT:,} records and the files hold more: "
                "use -o jsonl or -o json (streamed), or --limit",
                ExitCode.USAGE,
            )
        _print_rows(source_name(files), rows)


def _write_checked_array(records: Callable[[], Iterator[Mapping[str, object]]]) -> None:
    """The records ``records()`` reads, as one JSON array on stdout, or nothing.

    A first pass reads (and decrypts) every record without printing, so a line that
    cannot be read is a usage error before the ``[`` is written: a script never gets
    a valid-looking array that silently stops short, nor a cut-off one. The second
    pass prints as many records as the first counted (records appended to a live log
    meanwhile are left out). Should it fail anyway (a file rewritten or rotated
    between the passes), the array is left unclosed, so no JSON reader takes it for
    the whole, and the error says so.
    """
    count = sum(1 for _ in records())

    def again() -> Iterator[Mapping[str, object]]:
        try:
            yield from itertools.islice(records(), count)
        except CliError as exc:
            raise CliError(
                f"{exc.message} (the files changed while they were read: the JSON array "
                "printed is incomplete)",
                exc.exit_code,
            ) from None

    _write_json_array(again())


def _write_json_array(records: Iterable[Mapping[str, object]]) -> None:
    """``records`` as one indented JSON array on stdout, written a record at a time (the
    text ``emit_json`` prints for the whole list, without holding it)."""
    with result_stream() as stream:
        stream.write("[")
        empty = True
        for record in records:
            text = json.dumps(record, indent=2, ensure_ascii=False)
            # JSON text has no raw line break inside a string: each \n is between tokens
            stream.write(("\n  " if empty else ",\n  ") + text.replace("\n", "\n  "))
            empty = False
        stream.write("]\n" if empty else "\n]\n")


_ALERT_COLUMNS: Final = ("time", "severity", "detector", "principal", "source", "path", "summary")


def _print_analysis(data: Mapping[str, JSON], limit: int) -> None:
    alerts = data["alerts"]
    rows = [a for a in alerts if isinstance(a, dict)] if isinstance(alerts, list) else []
    shown = rows if limit == 0 else rows[:limit]
    counts = data["counts"]
    count_rows = (
        [{"detector": k, "alerts": v} for k, v in counts.items()]
        if isinstance(counts, dict)
        else []
    )
    print_table(
        rows_table("alerts", shown, _ALERT_COLUMNS),
        *([f"... {len(rows) - len(shown)} more (--limit 0 shows all, --output json too)"]
          if len(shown) < len(rows) else []),
        rows_table("alerts per detector", count_rows, ("detector", "alerts")),
        f"{data['events']} event(s) in {data['elapsed_seconds']} s "
        f"({data['events_per_second']} events/s): {len(rows)} alert(s).",
    )  # fmt: skip


def analyze(
    *,
    files: FilesArg,
    fmt: Annotated[
        LogFormat | None,
        typer.Option(
            "--format",
            help="ours, cloudtrail or vault (default: recognised per file).",
            show_default=False,
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A server configuration file whose monitor.* thresholds to use "
            "(default: the built-in thresholds).",
            show_default=False,
        ),
    ] = None,
    rate_threshold: Annotated[
        int | None,
        typer.Option(
            "--rate-threshold",
            min=1,
            help="Reads by one principal in the rate window that raise a rate alert "
            "(default 50, or --config's).",
            show_default=False,
        ),
    ] = None,
    rate_window: Annotated[
        float | None,
        typer.Option(
            "--rate-window",
            min=1.0,
            help="Seconds of the rate window (default 300, or --config's).",
            show_default=False,
        ),
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="Catalog file whose honeytokens and prefix to use "
            "(default: the packaged catalog).",
            show_default=False,
        ),
    ] = None,
    honeytoken: Annotated[
        list[str] | None,
        typer.Option(
            "--honeytoken",
            help="A decoy secret path, e.g. "
            "medessence/production/database/legacy-admin (repeatable).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Alerts shown in the table (0: all).")
    ] = 50,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Run the anomaly detectors over audit logs: ours, CloudTrail or Vault (offline).

    Alerts are findings, not errors: the exit code is 0 whatever is found.
    """
    from medsecrets.catalog.loader import default_catalog, load_catalog
    from medsecrets.errors import CatalogError
    from medsecrets.monitor.analyze import analyze as run

    try:
        model = load_catalog(catalog) if catalog is not None else default_catalog()
    except CatalogError as exc:  # the file given is at fault: bad input, as --config's
        raise CliError(f"--catalog: {exc}", ExitCode.USAGE) from None
    decoys = frozenset(h.strip("/") for h in honeytoken or ())

    def is_honeytoken(path: str) -> bool:
        return path.strip("/") in decoys or model.is_honeytoken(path)

    config = _thresholds(config_file)
    config = dataclasses.replace(
        config,
        rate_limit=rate_threshold or config.rate_limit,
        rate_window=rate_window or config.rate_window,
    )
    with reading(), _byte_progress(files, "analyzing") as advance:
        report = run(
            files,
            None if fmt is None else fmt.value,
            config,
            is_honeytoken,
            prefix=model.prefix,
            progress=advance,
        )
    _warn_analysis(report)
    data = _analysis_data(report)
    emit(data, output, lambda: _print_analysis(data, limit))


def _thresholds(config_file: Path | None) -> DetectorConfig:
    """The detector thresholds of a server configuration file (the defaults without one):
    only its ``monitor.*`` settings are read (and checked), so the server's TLS files or
    database need not exist where the logs are analysed."""
    from medsecrets.monitor.detectors import DetectorConfig
    from medsecrets.server.config import load_settings

    if config_file is None:
        return DetectorConfig()
    try:
        settings = load_settings(
            str(config_file), env={}, overrides={"tls_disable": True}, only=("monitor.",)
        )
    except ConfigError as exc:  # the file given is at fault: a usage error
        raise CliError(f"--config: {exc.message}", ExitCode.USAGE) from None
    return settings.monitor.detectors


def _places(places: Sequence[tuple[str, int]], count: int) -> str:
    """``file:line, …`` of the first places of ``count``."""
    named = ", ".join(f"{file}:{line}" for file, line in places)
    return named + (", …" if count > len(places) else "")


def _warn_analysis(report: AnalysisReport) -> None:
    """Warn (stderr) about what the analysis passed over or could not trust."""
    from medsecrets.monitor.sources import MAX_LINE_BYTES

    if report.skipped_lines:
        warn(
            f"skipped {report.skipped_lines} line(s) longer than {MAX_LINE_BYTES} bytes, "
            f"not analysed: {_places(report.skipped_at, report.skipped_lines)}"
        )
    if report.digests:
        names = ", ".join(report.digests[:3]) + (", …" if len(report.digests) > 3 else "")
        warn(f"skipped {len(report.digests)} CloudTrail digest file(s), not logs: {names}")
    if report.late_events:
        warn(
            f"{report.late_events} event(s) came more than 15 min out of time order: their "
            "windows and baselines may be off (give the files in time order; CloudTrail "
            "files named as CloudTrail names them are put in delivery order)"
        )
    if report.duplicate_events:
        warn(
            f"skipped {report.duplicate_events} second cop(ies) of CloudTrail events "
            "(a cross-account call is delivered to both accounts; a trail may repeat "
            "another's): each event counted once"
        )
    if report.events == 0:
        warn("no access events found (an encrypted log must be decrypted first: audit read)")


def _analysis_data(report: AnalysisReport) -> dict[str, JSON]:
    """The JSON result of ``analyze``."""
    return {
        "events": report.events,
        "skipped_lines": report.skipped_lines,
        "late_events": report.late_events,
        "duplicate_events": report.duplicate_events,
        "digest_files": list(report.digests),
        "elapsed_seconds": round(report.elapsed, 3),
        "events_per_second": round(report.events_per_second),
        "formats": dict(report.formats),
        "counts": dict(report.counts),
        "alerts": [wire(alert.to_dict()) for alert in report.alerts],
    }


def register(app: typer.Typer) -> None:
    """Add ``verify``, ``read`` and ``analyze`` to the ``audit`` command group."""
    app.command("verify")(verify)
    app.command("read")(read)
    app.command("analyze")(analyze)
