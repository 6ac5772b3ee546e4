"""Log parsers: our audit log, AWS CloudTrail and HashiCorp Vault audit logs → ``AccessEvent``.

Every reader streams one file (plain or gzip, recognised by its magic bytes)
and yields events in file order:

- ``read_ours``: our JSON-lines audit records. Only ``kind: response``
  records become events (a request record says what was asked, its response
  what happened); request, checkpoint and alert records are skipped without
  being parsed. A line must be one of our records: a JSON object with a
  ``kind``, or without one (then a response) but with ``seq`` and ``hash``;
  anything else (a Vault or CloudTrail entry) is refused.
  ``event_from_record`` converts one record (a mapping) and is shared with the
  online ``MonitorEngine`` (where a record without ``kind`` is a response).
- ``read_cloudtrail``: CloudTrail log files: ``{"Records": [...]}`` documents
  (one per file, as CloudTrail delivers them), and also one event per line or
  EventBridge envelopes (``{"detail": {...}}``). Every JSON value of the file
  must be one of these: ``Records`` a list of objects, an event an object
  with ``eventVersion`` or ``eventSource``, an envelope's ``detail`` an event
  (or another EventBridge event, with a ``detail-type``: skipped); anything
  else (a list, a scalar, one of our records, a Vault entry) is refused.
  A file is read whole, up to ``MAX_DOCUMENT_BYTES`` (64 MiB) decompressed,
  and refused unparsed when it holds more JSON objects and arrays than
  records can (``BYTES_PER_OBJECT``). A digest file (``digestStartTime``,
  ``logFiles``) holds no event: it is skipped and noted. A second copy of an
  event (a cross-account call is delivered to both accounts with one
  ``sharedEventID``; the same ``eventID`` twice) is skipped and counted when
  the readers of every file share one ``Skipped``.
  Only Secrets Manager events
  (``eventSource`` ``secretsmanager.amazonaws.com``) become events
  (``DescribeSecret`` is ``describe``);
  ``BatchGetSecretValue`` is ``other``: AWS logs a ``GetSecretValue`` entry
  for each secret the batch returns, and those are the reads (counting the
  batch's ``secretIdList`` too counted every secret twice).
  The principal is ``userIdentity.arn`` (else ``principalId``, else the
  invoking service), but an assumed role is its role
  (``sessionContext.sessionIssuer.arn``, plus ``/<sourceIdentity>`` when set;
  the session name only for IAM Identity Center roles, ``AWSReservedSSO_*``,
  and emergency roles, where it names the person); a secret ARN's
  6-character random suffix is stripped (but a partial ARN of a honeytoken is
  kept whole), so ``arn:...:secret:medessence/production/database-AbCdEf`` is the path
  ``medessence/production/database``. A role or IAM user whose name matches
  ``EMERGENCY_PATTERN`` (``break-glass``, ``breakglass``, ``emergency``) is an
  emergency credential, and so is the account's root user (``Root``).
- ``read_vault``: Vault file audit device JSON lines; ``response`` entries
  become events. Every line must be a JSON object with a ``type`` (text:
  Vault writes ``request`` and ``response``; any other type is skipped);
  anything else (one of our records) is refused. The mount
  (``request.mount_point``, else the first path segment) is stripped, and so
  is the KV v2 segment: ``secret/data/<path>`` reads are ``read``,
  ``secret/metadata/<path>`` lists are ``list`` and its reads ``describe``. An
  ``error`` containing ``permission denied`` (or a missing/invalid token) is
  ``denied``. The principal is the Vault identity, ``entity#<auth.entity_id>``,
  when there is one (one principal across its auth methods), else
  ``auth.display_name`` (with ``auth.metadata.role_name`` added for AppRole,
  whose display name is just ``approle``), keyed, for the names many tokens
  share (``token``, ``root``, none), by a prefix of the ``auth.accessor`` HMAC;
  ``auth.metadata.emergency: "true"`` or a ``break-glass`` /
  ``emergency`` policy marks an emergency token. Request entries are skipped
  unparsed (``type`` last, as Vault writes it now, or second, as it did); a
  line may have syslog framing or a file device ``prefix`` before its JSON
  (``_unframed``).

Files are read in 4 MiB blocks; lines that hold one JSON object are parsed by
orjson, anything else by the standard library (so both accept the same
lines, up to ``MAX_NESTING`` levels of nesting). ``detect_format`` sniffs a
file's first bytes. Malformed input raises ``LogFormatError`` naming the file
and line; no parser echoes a field value into an error (logs can hold HMACs,
never secrets, but we keep the habit). Bounds, so that no input crashes,
hangs or takes unbounded memory:

- only a regular file is read (``LogFormatError`` "not a regular file" for a
  FIFO, a pipe such as ``<(cat log)``, a device or a directory, before it is
  opened for reading; it is then opened without blocking): a file is opened
  several times (sniffed, then read), which a pipe cannot be;
- a line longer than ``MAX_LINE_BYTES`` (1 MiB) is skipped unparsed, its bytes dropped as
  they are read (never held whole), and noted in a ``Skipped`` given to the reader (a count
  and the first ``SKIPPED_NAMED`` places): anyone can make Vault write such a line (an
  unauthenticated login with a large body is logged with its keys), and refusing it refused
  the whole log;
- nesting deeper than the parsers go (orjson: 1024, the standard library
  here: ``MAX_NESTING``) is malformed JSON;
- a truncated or corrupt gzip is ``LogFormatError`` "truncated or corrupt
  gzip", naming the file;
- times must be ISO 8601 (``events.parse_time``: strict digits), in the years 1 to 9999
  UTC (``_ts``: an alert shows its event's time as a ``datetime``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import itertools
import json
import os
import re
import sys
import typing
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, BinaryIO, Final, Literal

import msgspec
import orjson

from medsecrets.audit.record import Outcome, outcome_for, split_path
from medsecrets.errors import InvalidRequest
from medsecrets.fdio import NOT_REGULAR, NotRegularFileError, open_regular
from medsecrets.monitor.events import (
    ROUTE_OPERATIONS,
    AccessEvent,
    Operation,
    lineage,
    parse_time,
)

__all__ = [
    "BLOCK_BYTES",
    "BYTES_PER_OBJECT",
    "CLOUDTRAIL_OPERATIONS",
    "COPIES_KEPT",
    "COPY_WINDOW",
    "DEFAULT_PREFIX",
    "EMERGENCY_PATTERN",
    "EMERGENCY_POLICIES",
    "FORMATS",
    "GZIP_MAGIC",
    "LINE_FORMATS",
    "MAX_DOCUMENT_BYTES",
    "MAX_LINE_BYTES",
    "MAX_NESTING",
    "SKIPPED_NAMED",
    "EventFields",
    "Format",
    "LogFormatError",
    "Row",
    "Skipped",
    "detect_format",
    "event_from_record",
    "event_from_vault",
    "events_from_cloudtrail",
    "events_of",
    "is_compressed",
    "line_blocks",
    "open_log",
    "read_batches",
    "read_cloudtrail",
    "read_events",
    "read_log",
    "read_ours",
    "read_vault",
    "rows_in_block",
]

Format = Literal["ours", "cloudtrail", "vault"]
FORMATS: Final = ("ours", "cloudtrail", "vault")
LINE_FORMATS: Final = ("ours", "vault")
"""Formats with one record per line (read in blocks of whole lines, in parallel by ``analyze``)."""
DEFAULT_PREFIX: Final = "medessence"
SECRETS_MANAGER: Final = "secretsmanager.amazonaws.com"

EMERGENCY_PATTERN: Final = re.compile(r"break-?glass|emergency", re.IGNORECASE)
"""An IAM role or IAM user (CloudTrail) whose name matches is an emergency credential."""
EMERGENCY_POLICIES: Final = frozenset({"break-glass", "breakglass", "emergency"})
"""A Vault token with one of these policies is an emergency token."""

CLOUDTRAIL_OPERATIONS: Final[Mapping[str, Operation]] = {
    "GetSecretValue": "read",
    "BatchGetSecretValue": "other",  # its secrets come as GetSecretValue entries
    "ListSecrets": "list",
    "ListSecretVersionIds": "list",
    "DescribeSecret": "describe",
    "CreateSecret": "write",
    "PutSecretValue": "write",
    "UpdateSecret": "write",
    "UpdateSecretVersionStage": "write",
    "RestoreSecret": "write",
    "RotateSecret": "write",
    "CancelRotateSecret": "write",
    "PutResourcePolicy": "write",
    "DeleteResourcePolicy": "write",
    "TagResource": "write",
    "UntagResource": "write",
    "ReplicateSecretToRegions": "write",
    "RemoveRegionsFromReplication": "write",
    "StopReplicationToReplica": "write",
    "DeleteSecret": "delete",
}
"""Secrets Manager ``eventName`` → operation; every other event name is ``other``."""

_DENIED_CODES: Final = frozenset(
    {
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "NotAuthorized",
        "MissingAuthenticationToken",
    }
)
_FAILURE_CODES: Final = frozenset({"InternalServiceError", "InternalFailure", "ServiceUnavailable"})
_OUTCOMES: Final[Mapping[str, Outcome]] = {
    "success": "success",
    "denied": "denied",
    "error": "error",
    "failure": "failure",
}
_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}\Z")
_KV2_SEGMENTS: Final = frozenset({"data", "metadata", "delete", "undelete", "destroy", "subkeys"})
_VAULT_WRITES: Final = frozenset({"create", "update", "patch"})
_VAULT_DENIED = ("permission denied", "invalid token", "missing client token", "bad token")

_decode = json.JSONDecoder().raw_decode
_SPACE: Final = re.compile(rb"[ \t\r\n]*")
"""JSON's blanks (before the document of a CloudTrail file)."""


EventFields = tuple[str, str, Operation, str, str, str | None, str | None, Outcome, bool]
"""``AccessEvent``'s fields from ``principal`` to ``emergency``."""
Row = tuple[float, EventFields, str]
"""An event as ``(ts, fields, request_id)``: cheap to build and to send to another process,
and compact (events with the same fields share one tuple). ``events_of`` makes the events."""


class LogFormatError(InvalidRequest):
    """A log cannot be read as the format asked for (names the file and line, never a value)."""

    def __init__(self, problem: str, *, file: str | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(f"{where}{problem}")


MAX_LINE_BYTES: Final = 1 << 20
"""The longest line (without its ``\\n``) of a line log: 1 MiB. A record is a few hundred
bytes (a Vault entry a few KiB); a longer line is skipped and noted (``Skipped``), its bytes
dropped as they are read, so reading a log never holds more than a block and one line (think
of a gzip bomb)."""
SKIPPED_NAMED: Final = 10
"""How many skipped lines a ``Skipped`` names (it counts them all)."""
MAX_DOCUMENT_BYTES: Final = 64 << 20
"""The largest CloudTrail file, decompressed: 64 MiB (CloudTrail delivers files of a few
MiB at most); a larger one is refused, as it is read whole."""
BYTES_PER_OBJECT: Final = 64
"""A CloudTrail file over 1 MiB with more than one ``{`` or ``[`` per 64 bytes is refused
before it is parsed: a record is hundreds of bytes (about 170 per bracket), while
``{"Records":[{},{},…]}`` (22 million objects in 64 MiB, 65 KB gzipped) took 2 GB to parse."""
MAX_NESTING: Final = 512
"""The deepest nesting of arrays and objects in a line that orjson does not read whole (the
standard library reads it; a deeper one is refused, the same way in every process)."""
_BAD_GZIP: Final = "truncated or corrupt gzip"
GZIP_MAGIC: Final = b"\x1f\x8b"


COPY_WINDOW: Final = 3600.0
"""Seconds of event time within which a second copy of a CloudTrail event is recognised."""
COPIES_KEPT: Final = 200_000
"""CloudTrail event ids remembered at most (the oldest half is dropped beyond)."""


class Skipped:
    """What a read passed over: lines longer than ``MAX_LINE_BYTES`` (``lines``, and the first
    ``SKIPPED_NAMED`` of them as ``(file, line)`` in ``where``), CloudTrail digest files
    (``digests``, their names) and second copies of CloudTrail events (``copies``). Give one
    to the readers to learn about them, the same one to the readers of every file of one
    analysis: it remembers the CloudTrail events read (``copy``), so that a copy in another
    file is passed over too.

    A cross-account call is delivered twice, to the caller's account and to the resource
    owner's, with the same ``sharedEventID`` (and each its own ``eventID``), so an
    organisation trail's bucket holds both; the same event may also come twice with the same
    ``eventID`` (an account's own trail beside the organisation's, a file given twice). An
    event is a copy when its ``sharedEventID``, else its ``eventID``, was read within
    ``COPY_WINDOW`` seconds of event time (at most ``COPIES_KEPT`` ids are kept).
    """

    __slots__ = ("_newest", "_seen", "copies", "digests", "lines", "where")

    def __init__(self) -> None:
        self.lines = 0
        self.where: list[tuple[str, int]] = []
        self.digests: list[str] = []
        self.copies = 0
        self._seen: dict[str, float] = {}
        self._newest = float("-inf")

    def line(self, file: str, number: int) -> None:
        """Note the skipped line ``number`` of ``file``."""
        self.lines += 1
        if len(self.where) < SKIPPED_NAMED:
            self.where.append((file, number))

    def copy(self, event_id: str, ts: float) -> bool:
        """Whether the CloudTrail event ``event_id`` (its ``sharedEventID``, else its
        ``eventID``) at ``ts`` is a copy of one read before (then it is counted in
        ``copies``); otherwise it is remembered."""
        seen = self._seen
        last = seen.get(event_id)
        if last is not None and abs(ts - last) <= COPY_WINDOW:
            self.copies += 1
            return True
        if ts > self._newest:
            self._newest = ts
            horizon = ts - COPY_WINDOW
            while seen:  # (roughly in time order: CloudTrail files come in delivery order)
                oldest = next(iter(seen))
                if seen[oldest] >= horizon:
                    break
                del seen[oldest]
        if len(seen) >= COPIES_KEPT:
            for key in list(seen)[: len(seen) // 2]:
                del seen[key]
        seen[event_id] = ts
        return False

    def merge(self, other: Skipped, offset: int = 0) -> None:
        """Add ``other``'s notes, its line numbers moved by ``offset``."""
        for file, number in other.where:
            if len(self.where) < SKIPPED_NAMED:
                self.where.append((file, number + offset))
        self.lines += other.lines
        self.digests.extend(other.digests)
        self.copies += other.copies


def _skip_line(skipped: Skipped | None, file: str, number: int) -> None:
    if skipped is not None:
        skipped.line(file, number)


def _open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``fdio.open_regular``, its refusal of anything but a regular file as
    ``LogFormatError`` (raises ``OSError`` for a file that cannot be opened)."""
    try:
        return open_regular(path)
    except NotRegularFileError:
        raise LogFormatError(NOT_REGULAR, file=os.fspath(path)) from None


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """True when the file at ``path`` is gzip (its magic bytes).

    Raises ``LogFormatError`` when it is not a regular file, and ``OSError``.
    """
    with _open_regular(path) as probe:
        return probe.read(2) == GZIP_MAGIC


class _GzipLog(gzip.GzipFile):
    """A gzip stream over a file it closes with itself (``GzipFile`` leaves a given file open)."""

    def __init__(self, raw: BinaryIO, name: str) -> None:
        self._raw = raw
        super().__init__(filename=name, mode="rb", fileobj=raw)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def open_log(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a log for binary reading, decompressing gzip (recognised by its magic bytes).

    The file is opened once. Raises ``LogFormatError`` when it is not a regular
    file (see ``_open_regular``), and ``OSError``. Read it with ``read_log``
    (a truncated or corrupt gzip raises ``LogFormatError``).
    """
    raw = _open_regular(path)
    try:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if compressed:
            return typing.cast(IO[bytes], _GzipLog(raw, os.fspath(path)))
    except BaseException:
        raw.close()
        raise
    return raw


def read_log(stream: IO[bytes], size: int, name: str) -> bytes:
    """Up to ``size`` bytes of a stream of ``open_log`` (fewer only at its end).

    Raises ``LogFormatError`` naming the file ``name`` for a truncated or
    corrupt gzip (``EOFError``, ``zlib.error``, ``BadGzipFile``), and ``OSError``.
    """
    try:
        return stream.read(size)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        raise LogFormatError(_BAD_GZIP, file=name) from None


BLOCK_BYTES: Final = 1 << 22
"""Size of the reads of a line log (and of the blocks ``analyze`` hands to worker processes)."""


def line_blocks(
    path: str | os.PathLike[str], skipped: Skipped | None = None
) -> Iterator[tuple[int, bytes]]:
    """``(number of its first line, block)``: a line log read as blocks of whole lines.

    Every block but the last ends with ``\\n``; the last holds what follows the
    last ``\\n`` (a line without one), if anything. A block is at most
    ``BLOCK_BYTES + MAX_LINE_BYTES`` long: when the bytes after the last ``\\n``
    read grow longer than ``MAX_LINE_BYTES``, that line is noted in ``skipped``
    and its bytes are dropped up to its ``\\n`` (the numbers of the lines after
    it count it). A block may still hold a line a little longer than
    ``MAX_LINE_BYTES``: ``rows_in_block`` skips it. Raises ``LogFormatError``
    (see ``open_log`` and ``read_log``) and ``OSError``.
    """
    name = os.fspath(path)
    with open_log(path) as stream:
        rest = b""
        number = 1
        dropping = False  # inside a line too long, up to its \n
        while chunk := read_log(stream, BLOCK_BYTES, name):
            if dropping:
                newline = chunk.find(b"\n")
                if newline < 0:
                    continue
                dropping = False
                number += 1
                chunk = chunk[newline + 1 :]
                if not chunk:
                    continue
            data = rest + chunk if rest else chunk  # rest: at most MAX_LINE_BYTES
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                block = data[:cut] if rest else data
                yield number, block
                number += block.count(b"\n")
            if len(rest) > MAX_LINE_BYTES:
                _skip_line(skipped, name, number)
                rest = b""
                dropping = True
        if rest:
            yield number, rest


def _long_line(block: bytes) -> int:
    """Offset of the first line of ``block`` longer than ``MAX_LINE_BYTES`` (not counting
    its ``\\n``; the last line may lack one), or -1. Costs one ``rfind`` per
    ``MAX_LINE_BYTES`` or so, not one per line."""
    size = len(block)
    start = 0
    while size - start > MAX_LINE_BYTES:
        newline = block.rfind(b"\n", start, start + MAX_LINE_BYTES + 1)
        if newline < 0:
            return start
        start = newline + 1  # every line from start to newline is short enough
    return -1


_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS: Final = bytes(range(256)).translate(None, b"[]{}")
"""Every byte but brackets (``bytes.translate`` deletes them)."""
_STEP: Final = tuple(1 if byte in b"[{" else -1 for byte in range(256))


def _nesting(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (brackets in strings not counted;
    an unterminated string's are): no deeper than its count of ``[`` and ``{``."""
    brackets = _STRING.sub(b"", data).translate(None, _BRACKETS)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _object(line: bytes) -> object:
    """The JSON value a line starts with (text after it is ignored, as ``raw_decode`` does).

    Raises ``ValueError`` (``UnicodeDecodeError`` is one) when there is none.
    The common case, a line holding one object, is parsed by orjson; any
    other line by the standard library, so both accept the same lines, but
    for nesting: orjson reads up to 1024 levels, the standard library here
    up to ``MAX_NESTING`` (a fixed limit: its own depends on the stack).
    """
    if line[:1] == b"{":
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    if line.count(b"[") + line.count(b"{") > MAX_NESTING and _nesting(line) > MAX_NESTING:
        raise ValueError("nested too deeply")
    try:
        return _decode(line.decode())[0]
    except RecursionError:  # not below MAX_NESTING, unless called from deep in the stack
        raise ValueError("nested too deeply") from None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


_FIRST_TS: Final = -62135596800.0
"""0001-01-01T00:00:00Z in POSIX seconds: the first time a ``datetime`` holds."""
_END_TS: Final = 253402300800.0
"""10000-01-01T00:00:00Z in POSIX seconds: every time of an event is before (its float is
below this, so ``AccessEvent.time`` gives a datetime; the last 31 µs of 9999 round to it)."""


def _ts(value: object) -> float:
    """POSIX seconds of a time (ISO 8601 text, or an aware ``datetime``). Raises
    ``LogFormatError`` for any other value, and for a time outside the years 1 to 9999 UTC
    (``AccessEvent.time``, which an alert shows, must be a ``datetime``)."""
    if isinstance(value, str):
        try:
            ts = parse_time(value)
        except (ValueError, IndexError):
            raise LogFormatError("bad time") from None
    elif isinstance(value, dt.datetime) and value.tzinfo is not None:
        ts = value.timestamp()
    else:
        raise LogFormatError("missing or bad time")
    if _FIRST_TS <= ts < _END_TS:
        return ts
    raise LogFormatError("bad time")


# --- ours ----------------------------------------------------------------------------------------


def _response_fields(record: Mapping[str, object]) -> EventFields:
    """The fields of a response record's event but its time and request id (see below)."""
    get = record.get
    route = get("operation")
    if type(route) is not str:
        route = ""
    principal = get("principal")
    remote = get("remote")
    path = get("path")
    environment = get("environment")
    category = get("category")
    named = get("outcome")
    outcome = _OUTCOMES.get(named) if type(named) is str else None
    if outcome is None:
        status = get("status")
        outcome = outcome_for(status) if type(status) is int else "success"
    return (
        lineage(principal) if type(principal) is str else "",
        remote if type(remote) is str else "",
        ROUTE_OPERATIONS.get(route, "other"),
        route,
        path if type(path) is str else "",
        environment if type(environment) is str and environment else None,
        category if type(category) is str and category else None,
        outcome,
        get("emergency") is True,
    )


def _record_row(record: Mapping[str, object]) -> Row | None:
    """``event_from_record`` as a ``Row``."""
    get = record.get
    if get("kind", "response") != "response":
        return None
    ts = _ts(get("time"))
    request_id = get("request_id")
    return ts, _response_fields(record), request_id if type(request_id) is str else ""


def event_from_record(record: Mapping[str, object]) -> AccessEvent | None:
    """The event of one of our audit records; ``None`` unless it is a response.

    A record without ``kind`` is taken as a response. ``time`` may be ISO 8601
    text or an aware ``datetime``; ``outcome`` falls back to the ``status``; a
    field of the wrong type counts as absent. Raises ``LogFormatError`` when
    the time is missing or bad.
    """
    row = _record_row(record)
    return None if row is None else AccessEvent(row[0], *row[1], row[2])


def _ours_line(line: bytes) -> Row | None:
    """The row of one line of our log (without ``\\n``; ``None``: skipped), parsed as JSON.

    The rule: a line whose first ``"kind":"`` (within its first 160 bytes) is
    not followed by ``response"`` is skipped unparsed; so is a blank line;
    any other line must be a JSON object, and one of our records: a record
    without ``kind`` is a response if it has ``seq`` and ``hash`` (every line
    ``render_line`` writes has ``prev``, ``seq``, ``kind`` and ``hash``; a Vault
    or CloudTrail entry has none of them), else it is refused. Raises
    ``LogFormatError`` (without file and line).
    """
    kind = line.find(_KIND, 0, 160)
    if kind >= 0 and not line.startswith(_RESPONSE, kind):
        return None  # request, checkpoint or alert record: not parsed at all
    if not line or line.isspace():
        return None
    try:
        record = _object(line)
    except ValueError:
        raise LogFormatError("not a JSON audit record") from None
    if not isinstance(record, dict):
        raise LogFormatError("not a JSON audit record")
    if "kind" not in record and ("seq" not in record or "hash" not in record):
        raise LogFormatError("not one of our audit records (no kind, seq and hash)")
    return _record_row(record)


_KIND: Final = b'"kind":"'
_RESPONSE: Final = b'"kind":"response"'


_Int64 = typing.Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""An integer that orjson, so ``_ours_line``, reads as one: it reads one beyond 64 bits as a
float (one from 2**63 to 2**64 - 1, an integer for both, is left to ``_ours_line`` too: the
bounds msgspec checks fit an int64)."""


class _Response(msgspec.Struct, gc=False):
    """The members of a response record that its event reads, typed as ``render_line``
    writes them (a member that is absent reads as ``None``, as ``dict.get`` gives it)."""

    kind: str | None = None
    time: str | None = None
    request_id: str | None = None
    principal: str | None = None
    remote: str | None = None
    operation: str | None = None
    path: str | None = None
    environment: str | None = None
    category: str | None = None
    outcome: str | None = None
    status: _Int64 | None = None
    emergency: bool | None = None


# A response line is decoded by msgspec into ``_Response`` (every other member is skipped,
# checked as JSON but not built): the same event as ``_ours_line`` gives, for the lines it
# takes, as msgspec accepts no line that ``_ours_line`` refuses and reads the members above
# as JSON does (a repeated member: its last value). It takes only ASCII lines (msgspec does
# not check the UTF-8 of a string it skips) that start with ``{`` (msgspec skips blanks before
# it, ``_ours_line`` refuses them), with fewer than ``_FAST_BRACKETS`` brackets (its depth
# limit follows the interpreter's recursion limit, orjson's is 1024) and every member above
# of the type shown (a ``1`` for ``emergency``, a float status, a status beyond 64 bits...)
# or absent; any other line goes to ``_ours_line``. The members but time and request id
# repeat from record to record, so they key a cache of the event fields they give (exact
# types: no ``True == 1``).
_decode_response: Final = msgspec.json.Decoder(_Response).decode
_FAST_BRACKETS: Final = 1000
_FIELDS: dict[tuple[object, ...], EventFields] = {}
_FIELDS_KEPT: Final = 16384


def _decoded_row(line: bytes) -> Row | None:
    """The row of a response line decoded into ``_Response`` (see the comment above);
    ``None`` when the line is not one for that (the caller parses it as JSON). Raises
    ``LogFormatError`` for a bad time."""
    if (
        line[:1] != b"{"
        or not line.isascii()
        or (
            sys.getrecursionlimit() > _FAST_BRACKETS
            and line.count(b"[") + line.count(b"{") >= _FAST_BRACKETS
        )
    ):
        return None
    try:
        found = _decode_response(line)
    except (msgspec.MsgspecError, RecursionError):
        return None
    time, request_id = found.time, found.request_id
    if found.kind != "response" or time is None:
        return None
    key = (
        found.principal,
        found.remote,
        found.operation,
        found.path,
        found.environment,
        found.category,
        found.outcome,
        found.status,
        found.emergency,
    )
    fields = _FIELDS.get(key)
    if fields is None:
        if len(_FIELDS) >= _FIELDS_KEPT:
            _FIELDS.clear()
        fields = _FIELDS[key] = _response_fields(dict(zip(_KEY_MEMBERS, key, strict=True)))
    return _ts(time), fields, request_id if request_id is not None else ""


_KEY_MEMBERS: Final = (
    "principal",
    "remote",
    "operation",
    "path",
    "environment",
    "category",
    "outcome",
    "status",
    "emergency",
)


def _ours_rows(block: bytes, name: str, number: int) -> list[Row]:
    """The rows of a block of whole lines of our log whose first line is ``number``.

    A response line is decoded by ``_decoded_row`` when it can be, any other
    line by ``_ours_line``'s rule, with the same outcome. Raises
    ``LogFormatError`` naming the file and line.
    """
    rows: list[Row] = []
    append = rows.append
    at = number
    try:
        for at, line in enumerate(io.BytesIO(block).readlines(), number):  # noqa: B007
            head, kind, tail = line.partition(_KIND)
            if kind and len(head) <= 160 - len(_KIND):
                if tail[:9] != b'response"':
                    continue  # request, checkpoint or alert record: not parsed at all
                row = _decoded_row(line)
                if row is None:
                    row = _ours_line(line.rstrip(b"\n"))
            else:
                row = _ours_line(line.rstrip(b"\n"))
            if row is not None:
                append(row)
    except LogFormatError as exc:
        raise LogFormatError(exc.problem, file=name, line=at) from None
    return rows


def read_ours(path: str | os.PathLike[str]) -> Iterator[AccessEvent]:
    """Events of our audit log at ``path`` (see module docstring)."""
    name = os.fspath(path)
    for number, block in line_blocks(path):
        yield from events_of(rows_in_block("ours", block, file=name, line=number))


# --- CloudTrail ----------------------------------------------------------------------------------


def _secret_name(secret_id: str, decoy: Callable[[str], bool] | None = None) -> str:
    """The secret name of a name or ARN (an ARN's ``-XXXXXX`` suffix removed).

    A partial ARN (without the random suffix) is valid too, and nothing tells
    the suffix from a name ending in ``-`` and six letters or digits
    (``…/old-backup``): a name kept whole is a decoy (``decoy``) is kept whole,
    so such a read of a honeytoken is caught (a full ARN of it still loses its
    suffix: the stripped name is the decoy).
    """
    if secret_id.startswith("arn:") and ":secret:" in secret_id:
        whole = secret_id.split(":secret:", 1)[1]
        stripped = _ARN_SUFFIX.sub("", whole)
        if stripped != whole and decoy is not None and decoy(whole.rstrip("/")):
            return whole
        return stripped
    return secret_id


def _cloudtrail_outcome(error_code: object) -> Outcome:
    if not isinstance(error_code, str) or not error_code:
        return "success"
    if error_code.startswith("AccessDenied") or error_code in _DENIED_CODES:
        return "denied"
    if error_code in _FAILURE_CODES:
        return "failure"
    return "error"


def _cloudtrail_paths(
    name: str, params: object, decoy: Callable[[str], bool] | None = None
) -> list[str]:
    if not isinstance(params, Mapping):
        return [""]
    secret_id = params.get("secretId")
    if isinstance(secret_id, str):
        return [_secret_name(secret_id, decoy)]
    filters = params.get("filters")
    if isinstance(filters, list):
        for item in filters:
            if isinstance(item, Mapping) and item.get("key") == "name":
                values = item.get("values")
                if isinstance(values, list) and values and isinstance(values[0], str):
                    return [values[0]]
    return [""]


_SSO_ROLE: Final = "AWSReservedSSO_"
"""IAM Identity Center roles: one per permission set, and their session name is the user."""


def _cloudtrail_principal(
    identity: object, emergency: re.Pattern[str] = EMERGENCY_PATTERN
) -> tuple[str, bool]:
    """``(principal, emergency)`` of a ``userIdentity``.

    An assumed role is its role, ``sessionContext.sessionIssuer.arn``: the
    session name is whatever the caller chose (the AWS SDKs name a session
    ``botocore-session-<epoch>`` and make a new one at every credential
    refresh, ECS a task id), so counting sessions split one workload into
    many principals, each starting afresh. ``/<sourceIdentity>`` is added when
    the session carries one (set by the one who assumed the role, and kept
    through role chaining). For an IAM Identity Center role
    (``AWSReservedSSO_…``) the session name is the person, and so it is for an
    emergency role (``emergency``: a break-glass role is assumed by hand, and
    each person's use must raise its own alert): the session's ``arn`` is
    kept. Anything else: ``arn``, else ``principalId``, else the
    invoking service.

    An emergency credential: a role or an IAM user whose name ``emergency``
    matches, and the account's root user (``type`` ``Root``: AWS asks that it
    be used for nothing but the few tasks only it can do, so its use of a
    secret is a break-glass use whatever its name).
    """
    if not isinstance(identity, Mapping):
        return "", False
    arn = _text(identity.get("arn"))
    kind = identity.get("type")
    if kind == "AssumedRole":
        context = identity.get("sessionContext")
        issuer = context.get("sessionIssuer") if isinstance(context, Mapping) else None
        role_arn = _text(issuer.get("arn")) if isinstance(issuer, Mapping) else ""
        if role_arn:
            role = role_arn.rpartition("/")[2]
            glass = emergency.search(role) is not None
            if arn and (glass or role.startswith(_SSO_ROLE)):
                return arn, glass
            source = _text(context.get("sourceIdentity")) if isinstance(context, Mapping) else ""
            return (f"{role_arn}/{source}" if source else role_arn), glass
    if ":assumed-role/" in arn:  # no session issuer: the session's ARN
        role = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        return arn, emergency.search(role) is not None
    glass = kind == "Root"
    if kind == "IAMUser":
        name = _text(identity.get("userName")) or arn.rpartition(":user/")[2]
        glass = bool(name) and emergency.search(name.rpartition("/")[2]) is not None
    for key in ("arn", "principalId", "invokedBy"):
        value = identity.get(key)
        if isinstance(value, str) and value:
            return value, glass
    return "", glass


def events_from_cloudtrail(
    record: Mapping[str, object],
    *,
    prefix: str = DEFAULT_PREFIX,
    emergency: re.Pattern[str] = EMERGENCY_PATTERN,
    decoy: Callable[[str], bool] | None = None,
) -> list[AccessEvent]:
    """The events of one CloudTrail record: none unless it is a Secrets Manager call.

    ``decoy``: the honeytoken test, for a partial secret ARN (``_secret_name``).
    Raises ``LogFormatError`` when ``eventTime`` is missing or bad.
    """
    if record.get("eventSource") != SECRETS_MANAGER:
        return []
    name = _text(record.get("eventName"))
    operation = CLOUDTRAIL_OPERATIONS.get(name, "other")
    principal, is_emergency = _cloudtrail_principal(record.get("userIdentity"), emergency)
    ts = _ts(record.get("eventTime"))
    source = _text(record.get("sourceIPAddress"))
    outcome = _cloudtrail_outcome(record.get("errorCode"))
    request_id = _text(record.get("eventID")) or _text(record.get("requestID"))
    events = []
    for found in _cloudtrail_paths(name, record.get("requestParameters"), decoy):
        path = found.rstrip("/")
        environment, category = split_path(path, prefix)
        events.append(
            AccessEvent(
                ts,
                principal,
                source,
                operation,
                name,
                path,
                environment,
                category,
                outcome,
                is_emergency,
                request_id,
            )
        )
    return events


def _json_values(path: str | os.PathLike[str]) -> Iterator[tuple[int, object]]:
    """``(line, value)`` of every JSON value in a file: one document, or several (one per line
    or concatenated), with the line each starts on.

    The file is read whole: one larger than ``MAX_DOCUMENT_BYTES`` (decompressed)
    is refused. Raises ``LogFormatError`` naming the file (and the line of a
    malformed value) and ``OSError``.
    """
    name = os.fspath(path)
    with open_log(path) as stream:
        data = read_log(stream, MAX_DOCUMENT_BYTES + 1, name)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LogFormatError(
            f"larger than {MAX_DOCUMENT_BYTES} bytes (not a CloudTrail log file)", file=name
        )
    if len(data) > 1 << 20 and data.count(b"{") + data.count(b"[") > len(data) // BYTES_PER_OBJECT:
        raise LogFormatError(
            f"more than one JSON object or array per {BYTES_PER_OBJECT} bytes "
            "(not a CloudTrail log file)",
            file=name,
        )
    try:
        value = orjson.loads(data)  # the common case: one document (CloudTrail's own files)
    except orjson.JSONDecodeError:
        pass  # several documents, or an error to locate: the exact path below
    else:
        lead = _SPACE.match(data)
        yield data.count(b"\n", 0, lead.end() if lead else 0) + 1, value
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LogFormatError("not UTF-8 text", file=name, line=line) from None
    del data
    size = len(text)
    line, counted = 1, 0  # the line of position ``counted``
    position = _skip_space(text, 0)
    while position < size:
        line += text.count("\n", counted, position)
        counted = position
        try:
            value, end = _decode(text, position)
        except ValueError:
            raise LogFormatError("not a JSON document", file=name, line=line) from None
        except RecursionError:
            problem = "not a JSON document (nested too deeply)"
            raise LogFormatError(problem, file=name, line=line) from None
        yield line, value
        position = _skip_space(text, end)


_SPACE_TEXT: Final = re.compile(r"[ \t\r\n]*")


def _skip_space(text: str, position: int) -> int:
    """The position of the first character at or after ``position`` that is not a JSON blank."""
    found = _SPACE_TEXT.match(text, position)
    return found.end() if found else position


def _is_event(value: Mapping[str, object]) -> bool:
    """True for what looks like a CloudTrail event (it has ``eventVersion`` or ``eventSource``)."""
    return "eventVersion" in value or "eventSource" in value


def _cloudtrail_records(value: object) -> tuple[list[object], bool] | str | None:
    """``(records, whether they are a Records list)`` of one JSON value of a CloudTrail file,
    ``None`` for a digest file (``digestStartTime`` and ``logFiles``: delivered next to the
    logs when log file validation is on), or the problem that makes it none of the shapes
    ``read_cloudtrail`` takes."""
    if not isinstance(value, dict):
        return "not a CloudTrail log (a JSON object was expected)"
    if "digestStartTime" in value and "logFiles" in value:
        return None
    if "Records" in value:
        records = value["Records"]
        if not isinstance(records, list):
            return "not a CloudTrail log (Records is not a list)"
        return records, True
    if _is_event(value):
        return [value], False
    detail = value.get("detail")
    if isinstance(detail, dict):  # an EventBridge envelope
        if _is_event(detail):
            return [detail], False
        if "detail-type" in value:
            return [], False  # another EventBridge event: none of CloudTrail's
    return "not a CloudTrail log (no Records, CloudTrail event or EventBridge envelope)"


def read_cloudtrail(
    path: str | os.PathLike[str],
    *,
    prefix: str = DEFAULT_PREFIX,
    skipped: Skipped | None = None,
    decoy: Callable[[str], bool] | None = None,
) -> Iterator[AccessEvent]:
    """Secrets Manager events of a CloudTrail log file (see module docstring).

    Every JSON value of the file must be an object: a ``{"Records": [...]}``
    document (a list of objects), a CloudTrail event (it has ``eventVersion``
    or ``eventSource``) or an EventBridge envelope (a ``detail`` object: a
    CloudTrail event, or skipped when it is another event with a
    ``detail-type``); a digest file is skipped (its name noted in
    ``skipped.digests``); with ``skipped``, a second copy of an event (the same
    ``sharedEventID``, else ``eventID``, within ``COPY_WINDOW``: see ``Skipped``) is passed
    over and counted in ``skipped.copies``. Anything else raises ``LogFormatError`` naming the file
    and the line the value starts on (for a bad record of a ``Records`` list,
    its number in the list). CloudTrail does not promise time order inside
    or across files; the analyzer reorders (``monitor.analyze``).
    """
    name = os.fspath(path)
    for line, value in _json_values(path):
        found = _cloudtrail_records(value)
        if found is None:  # a digest file: no event in it
            if skipped is not None:
                skipped.digests.append(name)
            continue
        if isinstance(found, str):
            raise LogFormatError(found, file=name, line=line)
        records, listed = found
        for number, record in enumerate(records, 1):
            try:
                if not isinstance(record, dict):
                    raise LogFormatError("not a CloudTrail event")
                events = events_from_cloudtrail(record, prefix=prefix, decoy=decoy)
                if events and skipped is not None:
                    key = _text(record.get("sharedEventID")) or _text(record.get("eventID"))
                    if key and skipped.copy(key, events[0].ts):
                        continue
                yield from events
            except LogFormatError as exc:
                where = f" (record {number} of Records)" if listed else ""
                raise LogFormatError(f"{exc.problem}{where}", file=name, line=line) from None


# --- Vault ---------------------------------------------------------------------------------------


def _vault_operation(operation: str, path: str, mount: str) -> tuple[Operation, str]:
    """``(operation, secret path)`` of a Vault request on ``path`` under ``mount``."""
    if path.startswith("auth/"):
        return "auth", ""
    if path.startswith(("sys/", "identity/", "cubbyhole/")):
        return "other", ""
    if not mount or not path.startswith(mount):
        mount = path.split("/", 1)[0] + "/"
    rest = path[len(mount) :]
    segment, _, tail = rest.partition("/")
    if segment in _KV2_SEGMENTS:
        secret = tail.rstrip("/")
        if segment == "data":
            if operation == "read":
                return "read", secret
            if operation in _VAULT_WRITES:
                return "write", secret
            if operation == "delete":
                return "delete", secret
            return "other", secret
        if segment == "metadata":
            if operation == "list":
                return "list", secret
            if operation == "read":
                return "describe", secret
            if operation == "delete":
                return "delete", secret
            if operation in _VAULT_WRITES:
                return "write", secret
            return "other", secret
        if segment in ("delete", "destroy"):
            return "delete", secret
        if segment == "undelete":
            return "write", secret
        return "other", secret
    secret = rest.rstrip("/")
    if operation == "read":
        return "read", secret
    if operation == "list":
        return "list", secret
    if operation in _VAULT_WRITES:
        return "write", secret
    if operation == "delete":
        return "delete", secret
    return "other", secret


_GENERIC_NAMES: Final = frozenset({"", "token", "root"})
"""Vault display names shared by unrelated tokens: ``token`` (any token created without a
display name), ``root`` (every root token), none."""


def _vault_identity(auth: object) -> tuple[str, bool]:
    """``(principal, emergency)`` of a Vault ``auth`` object.

    A token of a Vault identity (``entity_id``) is that entity,
    ``entity#<entity_id>``: Vault ties every login of one person or service to
    its entity, whatever the auth method (an entity has an alias per method),
    and a token created by such a token inherits it, while the display name
    changes with the method (``oidc-alice``, ``userpass-alice``): named by it,
    one identity was a principal per login method, whose counts never added up
    (a rate limit read twice over through two methods) and whose baselines each
    started afresh. The whole id is kept (look it up with ``vault read
    identity/entity/id/<id>``). A token without an entity is its display name
    (plus ``role_name`` for AppRole), and a generic name (``token``, ``root``,
    none) gets the first 12 hex digits of the token's ``accessor`` HMAC
    (``token#a1b2…``): each such token is its own.
    """
    if not isinstance(auth, Mapping):
        return "", False
    principal = _text(auth.get("display_name"))
    metadata = auth.get("metadata")
    emergency = False
    if isinstance(metadata, Mapping):
        role = metadata.get("role_name")
        if isinstance(role, str) and role and role not in principal:
            principal = f"{principal}:{role}" if principal else role
        flag = metadata.get("emergency")
        if isinstance(flag, str | int):  # not a list or object (str() of a deep one raised)
            emergency = str(flag).lower() in ("true", "1", "yes")
    policies = auth.get("policies")
    if isinstance(policies, list) and not emergency:
        emergency = any(p in EMERGENCY_POLICIES for p in policies if isinstance(p, str))
    entity = _text(auth.get("entity_id"))
    if entity:
        return f"entity#{entity}", emergency
    if principal in _GENERIC_NAMES:
        accessor = _text(auth.get("accessor"))
        if accessor:
            return f"{principal or 'token'}#{accessor.rpartition(':')[2][:12]}", emergency
    return principal, emergency


def event_from_vault(
    entry: Mapping[str, object], *, prefix: str = DEFAULT_PREFIX
) -> AccessEvent | None:
    """The event of one Vault audit entry; ``None`` unless it is a response.

    Raises ``LogFormatError`` when ``time`` is missing or bad.
    """
    row = _vault_row(entry, prefix)
    return None if row is None else AccessEvent(row[0], *row[1], row[2])


def _vault_row(entry: Mapping[str, object], prefix: str) -> Row | None:
    """``event_from_vault`` as a ``Row``."""
    if entry.get("type") != "response":
        return None
    request = entry.get("request")
    if not isinstance(request, Mapping):
        request = {}
    raw_operation = _text(request.get("operation"))
    operation, secret = _vault_operation(
        raw_operation, _text(request.get("path")), _text(request.get("mount_point"))
    )
    principal, emergency = _vault_identity(entry.get("auth"))
    error = _text(entry.get("error")).lower()
    outcome: Outcome = "success"
    if error:
        if any(marker in error for marker in _VAULT_DENIED):
            outcome = "denied"
        elif "internal error" in error:
            outcome = "failure"
        else:
            outcome = "error"
    environment, category = split_path(secret, prefix)
    ts = _ts(entry.get("time"))
    fields: EventFields = (
        principal,
        _text(request.get("remote_address")),
        operation,
        raw_operation,
        secret,
        environment,
        category,
        outcome,
        emergency,
    )
    return ts, fields, _text(request.get("id"))


_REQUEST_LAST: Final = b',"type":"request"}'
_REQUEST_SECOND: Final = b',"type":"request",'
_RESPONSE_TYPE: Final = b'"type":"response"'
FRAMING_BYTES: Final = 256
"""The longest text a Vault line may have before its JSON object (syslog, a ``prefix``)."""


def _vault_request(line: bytes) -> bool:
    """True for a line that is certainly a Vault request entry (skipped unparsed).

    Modern Vault writes ``type`` last: a line ending ``,"type":"request"}`` is a
    request (in valid JSON those quotes delimit strings, so that ``type`` is a
    member of the outer object, and the last one wins over any other). Older
    Vault writes ``time`` then ``type`` first: ``{"time":"<text>","type":"request",``
    is a request unless ``"type":"response"`` is anywhere in the line (a
    duplicate member would win: such a line is parsed). A response is never
    skipped; any other line is parsed.
    """
    if line.endswith(_REQUEST_LAST):
        return True
    if line.startswith(b'{"time":"'):
        close = line.find(b'"', 9, 64)
        return (
            close > 0
            and line.startswith(_REQUEST_SECOND, close + 1)
            and 92 not in line[9:close]  # no escaped quote in the time
            and _RESPONSE_TYPE not in line
        )
    return False


def _unframed(line: bytes) -> bytes:
    """``line`` from its JSON object on: syslog (``Mar  3 09:00:00 host vault[812]: ``) or a
    file device ``prefix`` (``@cee: ``) before it is dropped. The framing is at most
    ``FRAMING_BYTES`` of text without ``{`` or ``"`` that does not start a JSON array; a line
    without such a frame is returned as it is (and parsed as it is)."""
    start = line.find(b"{", 0, FRAMING_BYTES + 1)
    if start <= 0 or 34 in line[:start] or line[:start].lstrip()[:1] in (b"", b"["):
        return line
    return line[start:]


def _vault_rows(block: bytes, name: str, number: int, prefix: str) -> list[Row]:
    """The rows of a block of whole lines of a Vault log whose first line is ``number``.

    A request entry (``_vault_request``: ``type`` last or second) is skipped
    unparsed, and so is a blank line; a line framed by syslog or a ``prefix``
    is read from its ``{`` (``_unframed``); any other line must be a JSON
    object with a ``type`` (text: Vault writes ``request`` and ``response``).
    Raises ``LogFormatError`` naming the file and line.
    """
    rows: list[Row] = []
    for at, raw in enumerate(block.split(b"\n"), number):
        line = raw if raw[:1] == b"{" else _unframed(raw)
        if line[-1:] != b"}":
            line = line.rstrip()
            if not line:
                continue
        if _vault_request(line):
            continue  # a request entry: not parsed
        try:
            entry = _object(line)
        except ValueError:
            raise LogFormatError("not a JSON audit entry", file=name, line=at) from None
        if not isinstance(entry, dict):
            raise LogFormatError("not a JSON audit entry", file=name, line=at)
        if type(entry.get("type")) is not str:
            raise LogFormatError("not a Vault audit entry (no type)", file=name, line=at)
        try:
            row = _vault_row(entry, prefix)
        except LogFormatError as exc:
            raise LogFormatError(exc.problem, file=name, line=at) from None
        if row is not None:
            rows.append(row)
    return rows


def read_vault(
    path: str | os.PathLike[str], *, prefix: str = DEFAULT_PREFIX
) -> Iterator[AccessEvent]:
    """Events of a Vault file audit log (see module docstring)."""
    name = os.fspath(path)
    for number, block in line_blocks(path):
        yield from events_of(rows_in_block("vault", block, file=name, line=number, prefix=prefix))


# --- dispatch ------------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike[str]) -> Format:
    """``ours``, ``cloudtrail`` or ``vault``, by sniffing the first bytes of ``path``.

    Raises ``LogFormatError`` when the file is unreadable, not a regular file,
    a truncated or corrupt gzip, or none matches.
    """
    name = os.fspath(path)
    try:
        with open_log(path) as stream:
            head = read_log(stream, 8192, name).lstrip()
    except OSError as exc:
        problem = getattr(exc, "strerror", None) or "unreadable"
        raise LogFormatError(f"cannot read the log ({problem})", file=name) from None
    if head.startswith(b'{"prev":"') or (b'"kind":"' in head and b'"request_id"' in head):
        return "ours"
    if b'"Records"' in head or b'"eventSource"' in head or b'"eventVersion"' in head:
        return "cloudtrail"
    if b'"request"' in head and b'"type"' in head:
        return "vault"
    raise LogFormatError(
        "cannot tell the log format (expected ours, cloudtrail or vault)", file=name
    )


def read_events(
    path: str | os.PathLike[str],
    fmt: Format | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    skipped: Skipped | None = None,
    decoy: Callable[[str], bool] | None = None,
) -> Iterator[AccessEvent]:
    """Events of the log at ``path`` in format ``fmt`` (sniffed when ``None``); what was
    passed over (lines too long, digest files) is noted in ``skipped``; ``decoy``: the
    honeytoken test (a partial secret ARN of a decoy is kept whole, ``_secret_name``)."""
    batches = read_batches(path, fmt, prefix=prefix, skipped=skipped, decoy=decoy)
    return itertools.chain.from_iterable(batches)


def rows_in_block(
    fmt: Format,
    block: bytes,
    *,
    file: str,
    line: int = 1,
    prefix: str = DEFAULT_PREFIX,
    skipped: Skipped | None = None,
) -> list[Row]:
    """The events of ``block``, whole lines of a line log (``LINE_FORMATS``), as rows.

    ``file`` and ``line`` (the number of the block's first line) locate a
    malformed line in the ``LogFormatError`` raised for it (the first one). A
    line longer than ``MAX_LINE_BYTES`` is skipped and noted in ``skipped``
    (the last line of the block may be the start of one, cut: it is noted the
    same way). The events of a file's blocks, one after the other, are exactly
    those of ``read_events``.
    """
    if len(block) > MAX_LINE_BYTES:
        long = _long_line(block)
        if long >= 0:
            rows = (
                rows_in_block(fmt, block[:long], file=file, line=line, prefix=prefix)
                if long
                else []
            )
            at = line + block.count(b"\n", 0, long)
            _skip_line(skipped, file, at)
            end = block.find(b"\n", long)
            if end >= 0 and end + 1 < len(block):
                rows += rows_in_block(
                    fmt, block[end + 1 :], file=file, line=at + 1, prefix=prefix, skipped=skipped
                )
            return rows
    if fmt == "ours":
        return _ours_rows(block, file, line)
    if fmt == "vault":
        return _vault_rows(block, file, line, prefix)
    raise LogFormatError(f"not a line log format {fmt!r} (known: {', '.join(LINE_FORMATS)})")


def events_of(rows: Iterable[Row]) -> list[AccessEvent]:
    """The events of ``rows``."""
    return [AccessEvent(ts, *fields, request_id) for ts, fields, request_id in rows]


def read_batches(
    path: str | os.PathLike[str],
    fmt: Format | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    skipped: Skipped | None = None,
    decoy: Callable[[str], bool] | None = None,
) -> Iterator[list[AccessEvent]]:
    """``read_events`` as lists of events (a block of a line log, or a CloudTrail document)."""
    fmt = fmt or detect_format(path)
    name = os.fspath(path)
    if fmt in LINE_FORMATS:
        for number, block in line_blocks(path, skipped):
            rows = rows_in_block(fmt, block, file=name, line=number, prefix=prefix, skipped=skipped)
            yield events_of(rows)
    elif fmt == "cloudtrail":
        batch: list[AccessEvent] = []
        for event in read_cloudtrail(path, prefix=prefix, skipped=skipped, decoy=decoy):
            batch.append(event)
            if len(batch) >= 8192:
                yield batch
                batch = []
        if batch:
            yield batch
    else:
        raise LogFormatError(f"unknown log format {fmt!r} (known: {', '.join(FORMATS)})")
