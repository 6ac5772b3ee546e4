"""Audit queries: read our record files, filter records, and answer "who read this secret?".

``read_records`` parses the JSON lines of audit files (oldest file first,
``record.parse_line``: as strictly as they are written) and refuses to skip
anything: a line that is not a JSON object raises ``LineError`` naming the
file and line number. ``search`` filters records
with an ``AuditQuery``; ``who_read`` lists every successful read of one
secret (every version): by whom, from where, when: the blast-radius answer
for compromise response.

Records are the parsed lines (``record.py``): request/response records carry
``FIELDS``; alert records carry their ``Alert`` under ``alert``, whose
``principal``, ``source``, ``path``, ``category`` and ``environment`` the
filters look at too, so a search for a principal shows the alerts about them.
Checkpoint records match only queries without record filters (or
``kind="checkpoint"``).

A query that no record can match is refused (``InvalidRequest``), not
answered with nothing: an operation, outcome or kind that no record can carry
(``secret.read`` for ``secrets.read`` would otherwise report that nobody read
anything), a path prefix that breaks the secret paths' segment rules
(``engines.secrets.paths.check_segments``: ``medessence//x``), and a time window
that holds no time (``until`` not after ``since``).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, get_args

from medsecrets.audit.readback import numbered_lines
from medsecrets.audit.record import Kind, LineError, Outcome, format_time, is_record, parse_line
from medsecrets.engines.secrets.paths import check_segments
from medsecrets.errors import DecryptionError, InvalidRequest
from medsecrets.fdio import open_regular

__all__ = [
    "AuditQuery",
    "ReadRow",
    "operations",
    "read_records",
    "record_field",
    "record_time",
    "search",
    "who_read",
]

_ALERT_KEYS = {"remote": "source"}
_OUTCOMES: Final = frozenset(get_args(Outcome))
_KINDS: Final = frozenset(get_args(Kind))


@functools.cache
def operations() -> frozenset[str]:
    """Every operation a request or response record can name: the core's route names and
    those of the HTTP layer (``TRANSPORT_OPERATIONS``: metrics, the OpenAPI document, the
    docs page, ``unrouted``), imported on first use: the route table is not light."""
    from medsecrets.core.routes import TRANSPORT_OPERATIONS, route_table

    return frozenset({name for _, name in route_table("medessence")} | TRANSPORT_OPERATIONS)


def _utc_text(value: dt.datetime) -> str:
    """``value`` in the records' time format (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return format_time(value)


def record_time(record: Mapping[str, object]) -> dt.datetime | None:
    """The record's ``time`` as an aware UTC datetime, ``None`` if absent or unreadable (a
    time whose offset takes it out of the years 1 to 9999 included)."""
    text = record.get("time")
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text)
        return (
            value.astimezone(dt.UTC) if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        )
    except (ValueError, OverflowError):
        return None


def record_field(record: Mapping[str, object], name: str) -> object:
    """A record field; for alert records, falling back to the alert's own field."""
    value = record.get(name)
    if value is None:
        alert = record.get("alert")
        if isinstance(alert, Mapping):
            return alert.get(_ALERT_KEYS.get(name, name))
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Filters over audit records; every field given must match (``None``: any).

    - ``principal``: the principal's name or id, or a token accessor
      (``hmac-sha256:...`` as ``medsecrets audit hash`` prints it);
    - ``path_prefix``: the path itself or any path below it, by whole
      segments (``medessence/prod`` does not match ``medessence/production``);
      one that breaks the secret paths' segment rules (an empty, ``.`` or
      ``..`` segment, a character no segment has) raises ``InvalidRequest``
      naming the rule;
    - ``category``, ``environment``, ``operation``, ``outcome``, ``kind``:
      exact; an operation not in ``operations()``, an outcome or a kind no
      record has raises ``InvalidRequest`` naming the ones there are;
    - ``since`` (inclusive) and ``until`` (exclusive): the record's time;
      naive datetimes are taken as UTC; ``until`` at or before ``since`` (no
      time in between) raises ``InvalidRequest`` naming both.
    """

    principal: str | None = None
    path_prefix: str | None = None
    category: str | None = None
    environment: str | None = None
    operation: str | None = None
    outcome: str | None = None
    kind: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    _window: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_one_of("outcome", self.outcome, _OUTCOMES)
        _check_one_of("kind", self.kind, _KINDS)
        if self.operation is not None:
            _check_one_of("operation", self.operation, operations())
        if self.path_prefix is not None:
            check_segments(self.path_prefix, what="path_prefix")
        since = _utc_text(self.since) if self.since is not None else ""
        until = _utc_text(self.until) if self.until is not None else "~"  # after any digit
        if until <= since:
            raise InvalidRequest(
                f"until ({until}) must be later than since ({since}): no record is in between"
            )
        object.__setattr__(self, "_window", (since, until))

    def matches(self, record: Mapping[str, object]) -> bool:
        """Whether ``record`` passes every filter of this query."""
        if self.kind is not None and record.get("kind") != self.kind:
            return False
        for name, wanted in (
            ("operation", self.operation),
            ("outcome", self.outcome),
            ("category", self.category),
            ("environment", self.environment),
        ):
            if wanted is not None and record_field(record, name) != wanted:
                return False
        if self.principal is not None and self.principal not in (
            record_field(record, "principal"),
            record.get("accessor"),
        ):
            return False
        if self.path_prefix is not None and not _under(
            record_field(record, "path"), self.path_prefix.strip("/")
        ):
            return False
        if self.since is not None or self.until is not None:
            since, until = self._window
            return since <= _time_text(record) < until
        return True


def _check_one_of(name: str, value: str | None, known: frozenset[str]) -> None:
    if value is not None and value not in known:
        raise InvalidRequest(f"unknown {name} {value!r}: one of {', '.join(sorted(known))}")


def _under(path: object, prefix: str) -> bool:
    if not isinstance(path, str):
        return False
    path = path.strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _time_text(record: Mapping[str, object]) -> str:
    """The record's time in the fixed-width format (comparable as text), ``""`` if none."""
    text = record.get("time")
    if isinstance(text, str) and len(text) == 27 and text.endswith("Z"):
        return text  # render_line's format: compare as is
    value = record_time(record)
    return format_time(value) if value is not None else ""


def search(
    records: Iterable[Mapping[str, object]], query: AuditQuery
) -> Iterator[Mapping[str, object]]:
    """The records that match ``query``, in their order."""
    matches = query.matches
    for record in records:
        if matches(record):
            yield record


def read_records(
    paths: Sequence[Path], *, decode: Callable[[bytes], bytes] | None = None
) -> Iterator[dict[str, object]]:
    """Every record of the audit files ``paths`` (oldest first), in order.

    ``decode`` maps each stored line to its record line (an encrypted
    device's ``RecordCipher.open``). Raises ``LineError`` naming the file and
    the line number for a line that is not a JSON object (a blank line
    included; ``record.parse_line``), not an audit record (``kind``, ``seq``,
    ``hash``) or over ``MAX_LINE_BYTES`` (read no further), ``NotRegularFileError``
    (an ``OSError`` naming the file) for anything but a regular file (a FIFO would
    block for ever, a device never end: ``fdio.open_regular``), and ``OSError`` for
    a file that cannot be read.
    """
    for path in paths:
        with open_regular(path) as handle:
            for number, stored in numbered_lines(handle, path):
                line = stored
                if decode is not None:
                    try:
                        line = decode(stored.rstrip(b"\n"))
                    except (ValueError, DecryptionError):
                        raise LineError(f"{path}:{number}: cannot be decoded") from None
                try:
                    record = parse_line(line)
                except LineError as exc:
                    raise LineError(f"{path}:{number}: {exc}") from None
                if not is_record(record):
                    raise LineError(f"{path}:{number}: not an audit record")
                yield record


@dataclass(frozen=True, slots=True)
class ReadRow:
    """One successful read of a secret: who, from where, when, which version."""

    time: dt.datetime
    principal: str | None
    accessor: str | None
    remote: str
    user_agent: str
    path: str
    version: int | None
    request_id: str


def who_read(
    records: Iterable[Mapping[str, object]], path: str, since: dt.datetime | None = None
) -> list[ReadRow]:
    """Every successful ``secrets.read`` of exactly ``path`` (any version), oldest first.

    Counts response records (a read happened only if it succeeded) at or
    after ``since`` (naive: UTC). Records without a readable time are left
    out, as they cannot be placed.
    """
    wanted = path.strip("/")
    floor = _utc_text(since) if since is not None else ""
    rows: list[ReadRow] = []
    for record in records:
        if (
            record.get("kind") != "response"
            or record.get("operation") != "secrets.read"
            or record.get("outcome") != "success"
            or str(record.get("path", "")).strip("/") != wanted
            or _time_text(record) < floor
        ):
            continue
        time = record_time(record)
        if time is None:
            continue
        rows.append(
            ReadRow(
                time=time,
                principal=_text_or_none(record.get("principal")),
                accessor=_text_or_none(record.get("accessor")),
                remote=str(record.get("remote") or ""),
                user_agent=str(record.get("user_agent") or ""),
                path=str(record.get("path")),
                version=_int_or_none(record.get("version")),
                request_id=str(record.get("request_id") or ""),
            )
        )
    rows.sort(key=lambda row: row.time)
    return rows


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
