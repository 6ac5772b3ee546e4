"""``AccessEvent``: one access to a secrets manager, whatever log it came from.

The detectors see only this type. The parsers in ``monitor.sources`` turn our
audit records, AWS CloudTrail records and HashiCorp Vault audit entries into
it, so secrets kept in AWS or Vault are watched by the same rules.

An event names who (``principal``), from where (``source``), what
(``operation``, normalised, and ``raw_operation``, the log's own name), on
which secret (``path``, ``environment``, ``category``), how it ended
(``outcome``) and whether an emergency (break-glass) credential was used. It
never holds a secret value, a token or a key: only names, addresses and
identifiers that the source log itself prints in clear.

Time is kept as ``ts``, POSIX seconds (UTC), because the detectors' windows
are arithmetic on seconds; ``time`` is the same instant as an aware
``datetime``.

The detectors keep texts of events as keys (principals, paths, addresses) in
tables of up to ``DetectorConfig.max_keys`` keys, and a line of a log read
offline may be 1 MiB long: ``bounded`` replaces every text longer than
``MAX_TEXT`` characters by its first ``KEPT_TEXT`` characters, ``…`` and a
digest of the whole (distinct texts stay distinct; an alert still names a
readable prefix), so a key costs at most about 1 KiB.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from medsecrets.audit.record import Outcome

__all__ = [
    "KEPT_TEXT",
    "MAX_TEXT",
    "OPERATIONS",
    "ROUTE_OPERATIONS",
    "AccessEvent",
    "Operation",
    "bounded",
    "bounded_text",
    "lineage",
    "operation_of_route",
    "parse_time",
]

Operation = Literal["read", "list", "describe", "write", "delete", "auth", "other"]
"""``read``: a secret value left the store; ``list``: names were enumerated;
``describe``: one secret's metadata was read (its name, versions, owner: never a value);
``write``/``delete``: a secret changed; ``auth``: a credential was issued,
inspected or revoked (logins); ``other``: system, catalog and other calls."""

OPERATIONS: Final[frozenset[str]] = frozenset(
    {"read", "list", "describe", "write", "delete", "auth", "other"}
)

ROUTE_OPERATIONS: Final[Mapping[str, Operation]] = {
    "secrets.read": "read",
    "metadata.list": "list",
    "metadata.read": "describe",
    "secrets.write": "write",
    "secrets.restore": "write",
    "metadata.update": "write",
    "stages.update": "write",
    "provision": "write",
    "secrets.delete": "delete",
    "secrets.destroy": "delete",
    "tokens.create": "auth",
    "tokens.self": "auth",
    "tokens.lookup": "auth",
    "tokens.revoke": "auth",
}
"""Our route names (``operation`` of an audit record) that are not ``other``."""


def operation_of_route(route: str) -> Operation:
    """The normalised operation of one of our route names (unknown routes: ``other``)."""
    return ROUTE_OPERATIONS.get(route, "other")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MINUTES: dict[str, float] = {}


def parse_time(text: str) -> float:
    """POSIX seconds of an ISO 8601 / RFC 3339 time (``Z`` or an offset; naive means UTC).

    The common shape ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` (our records,
    CloudTrail, Vault's nanoseconds) takes a fast path: the seconds must be
    ``SS`` or ``SS.`` and any number of digits, in ASCII (below 61); the minute
    (``YYYY-MM-DDTHH:MM``, checked by ``datetime.fromisoformat`` once, when it
    enters a bounded cache: ASCII digits, a real date, hour and minute) is
    looked up and the seconds are added, which gives exactly the float of
    ``hour + minutes * 60 + seconds``. Any other text (a sign, an exponent,
    blanks or ``_`` in the seconds, a comma fraction, an offset...) goes to
    ``datetime.fromisoformat``. Raises ``ValueError`` for text that is not a
    time.
    """
    if len(text) >= 20 and text[-1] == "Z" and text[16] == ":":
        seconds = text[17:-1]
        if (
            # SS.fraction (the one "." at 2: removing the first leaves digits), or SS
            seconds.replace(".", "", 1).isdigit()
            if text[19] == "."
            else len(text) == 20 and seconds.isdigit()
        ) and seconds.isascii():  # isdigit() takes other scripts' digits, as float() does
            minute = text[:16]
            base = _MINUTES.get(minute)
            if base is None:
                base = _minute(minute)
            value = float(seconds)
            if value >= 61.0:
                raise ValueError("not a time")
            return base + value
    value_time = dt.datetime.fromisoformat(text)
    if value_time.tzinfo is None:
        value_time = value_time.replace(tzinfo=dt.UTC)
    return (value_time - _EPOCH).total_seconds()


def _minute(minute: str) -> float:
    """POSIX seconds of ``YYYY-MM-DDTHH:MM`` (UTC), remembered in ``_MINUTES``.

    Raises ``ValueError`` for text that is not such a minute (``fromisoformat``
    reads every field, in ASCII digits; the forms ISO 8601 also allows, such as
    a week date, give the minute they name).
    """
    found = (dt.datetime.fromisoformat(minute + ":00+00:00") - _EPOCH).total_seconds()
    if len(_MINUTES) >= 65536:
        _MINUTES.clear()
    _MINUTES[minute] = found
    return found


@dataclass(slots=True, unsafe_hash=True)
class AccessEvent:
    """One access (see module docstring). ``principal`` and ``source`` are ``""`` when unknown.

    Not frozen, for speed alone: a parser builds one per log line, and a frozen
    dataclass's ``__init__`` costs ten times more. Treat it as immutable: no
    parser or detector assigns to an event after building it, and it hashes
    and compares by value. It pickles as its constructor call (compact, for
    the worker processes of ``monitor.analyze``).
    """

    ts: float
    """POSIX seconds (UTC) of the access."""
    principal: str
    """Who: a token display name, an IAM ARN, a Vault display name; ``""`` if unauthenticated."""
    source: str
    """Client address (IPv4/IPv6 text), or whatever the log names instead; ``""`` if unknown."""
    operation: Operation
    raw_operation: str
    """The log's own operation: our route name, a CloudTrail eventName, a Vault operation."""
    path: str
    """Secret path ``<prefix>/<environment>/<category>[/name]``, or a list prefix, or ``""``."""
    environment: str | None
    category: str | None
    outcome: Outcome
    emergency: bool = False
    """True when an emergency (break-glass) credential made the access."""
    request_id: str = ""
    """The log's id for this access (our request id, CloudTrail eventID, Vault request id)."""

    def __reduce__(self) -> tuple[type[AccessEvent], tuple[object, ...]]:
        return (
            AccessEvent,
            (
                self.ts,
                self.principal,
                self.source,
                self.operation,
                self.raw_operation,
                self.path,
                self.environment,
                self.category,
                self.outcome,
                self.emergency,
                self.request_id,
            ),
        )

    @property
    def time(self) -> dt.datetime:
        """The access time as an aware UTC ``datetime``."""
        return dt.datetime.fromtimestamp(self.ts, dt.UTC)

    @classmethod
    def at(
        cls,
        time: dt.datetime,
        *,
        principal: str,
        operation: Operation,
        source: str = "",
        raw_operation: str = "",
        path: str = "",
        environment: str | None = None,
        category: str | None = None,
        outcome: Outcome = "success",
        emergency: bool = False,
        request_id: str = "",
    ) -> AccessEvent:
        """An event at an aware ``time`` (naive is refused with ``ValueError``)."""
        if time.tzinfo is None:
            raise ValueError("an access time must be timezone-aware")
        return cls(
            (time - _EPOCH).total_seconds(),
            principal,
            source,
            operation,
            raw_operation or operation,
            path,
            environment,
            category,
            outcome,
            emergency,
            request_id,
        )


def lineage(principal: str) -> str:
    """The principal our detectors count a token under: the token it descends from.

    A child of a token that is not root is named ``<parent's name>/<its name>``
    (``TokenStore.create``), so a stolen token that mints children is still one
    principal to the rate, bulk and failure counts and keeps its baselines (each
    child would otherwise start afresh, and split the counts). Only for our own
    records: other logs name principals their own way.
    """
    return principal.partition("/")[0]


MAX_TEXT: Final = 1024
"""The longest text of an event the detectors take as it is (see module docstring)."""

KEPT_TEXT: Final = 256
"""Characters of a longer text kept, readable, before its digest."""

_TEXTS: Final = (
    "principal",
    "source",
    "raw_operation",
    "path",
    "environment",
    "category",
    "request_id",
)


def bounded_text(text: str) -> str:
    """``text`` if at most ``MAX_TEXT`` characters long, else its first ``KEPT_TEXT``
    characters, ``…`` and the BLAKE2b-128 digest (hex) of the whole text."""
    if len(text) <= MAX_TEXT:
        return text
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
    return f"{text[:KEPT_TEXT]}…{digest.hexdigest()}"


def bounded(events: Sequence[AccessEvent]) -> Sequence[AccessEvent]:
    """``events`` with every text longer than ``MAX_TEXT`` replaced by ``bounded_text``
    (``events`` itself when none is: one sum of lengths per event)."""
    limit = MAX_TEXT
    for event in events:
        if (
            len(event.principal)
            + len(event.source)
            + len(event.path)
            + len(event.raw_operation)
            + len(event.request_id)
            + len(event.environment or "")
            + len(event.category or "")
            > limit
        ):
            return [_bounded(event) for event in events]
    return events


def _bounded(event: AccessEvent) -> AccessEvent:
    """``event``, or a copy with its texts bounded when one is too long."""
    changes: dict[str, str] = {
        name: bounded_text(text)
        for name in _TEXTS
        if isinstance(text := getattr(event, name), str) and len(text) > MAX_TEXT
    }
    return dataclasses.replace(event, **changes) if changes else event  # type: ignore[arg-type]
