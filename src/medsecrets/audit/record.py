"""Audit records: the event, its HMAC'd rendering, and the hash-chained line.

An ``AuditEvent`` is what the server knows about one request, response,
checkpoint or alert. It carries no secret value in clear: whatever is
sensitive (the token, the request body's values) sits in ``token`` and
``data`` and is replaced by ``hmac-sha256:<hex>`` (``Salter``, a per-device
key) when the event is rendered.

A rendered record is one line of UTF-8 JSON, ``\\n``-terminated, whose layout
is fixed so that verification needs no JSON parsing::

    {"prev":"<64 hex>","seq":<n>,"kind":"request",...,"hash":"<64 hex>"}

- ``prev`` is the ``hash`` of the record before it in the same chain (one
  chain per device per node), ``GENESIS`` for the first;
- ``hash`` is the SHA-256 (hex) of every byte of the line before
  ``,"hash":`` followed by ``}``, i.e. of the record without its hash;
- ``seq`` counts from 1 and increases by one along the chain.

``split_line`` reads ``prev``/``seq``/``hash`` back by position, and
``body_digest`` recomputes the hash: the contract that ``audit verify``
relies on. Field order after ``kind`` is the ``FIELDS`` order for requests and
responses; checkpoint and alert records carry their own fields (see
``CHECKPOINT_FIELDS`` and ``ALERT_FIELDS``).

Readers parse a stored line with ``parse_line`` (exactly as strictly as
``render_line`` writes it) and check it with ``is_record``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ALERT_FIELDS",
    "CHECKPOINT_FIELDS",
    "FIELDS",
    "GENESIS",
    "HMAC_PREFIX",
    "LARGE_DATA",
    "MAX_DATA_DEPTH",
    "MAX_DATA_KEY",
    "MAX_DATA_VALUES",
    "REFUSED_CODE",
    "SEALED_DATA",
    "AuditEvent",
    "Completion",
    "Kind",
    "LineError",
    "Outcome",
    "Salter",
    "body_digest",
    "format_stamp",
    "format_time",
    "is_record",
    "outcome_for",
    "parse_line",
    "record_data",
    "refused",
    "render_exchange",
    "render_line",
    "render_pair",
    "shared_fields",
    "split_line",
    "split_path",
]

GENESIS: Final = "0" * 64
"""``prev`` of the first record of a chain."""

HMAC_PREFIX: Final = "hmac-sha256:"

Kind = Literal["request", "response", "checkpoint", "alert"]
Outcome = Literal["success", "denied", "error", "failure"]

FIELDS: Final = (
    "time",
    "node",
    "device",
    "request_id",
    "principal",
    "accessor",
    "auth",
    "remote",
    "user_agent",
    "operation",
    "path",
    "environment",
    "category",
    "version",
    "outcome",
    "status",
    "error",
    "emergency",
    "data",
)
"""Keys of a request/response record between ``kind`` and ``hash``, in order."""

CHECKPOINT_FIELDS: Final = (
    "time",
    "node",
    "device",
    "covers",
    "covers_hash",
    "key_id",
    "signature",
)
ALERT_FIELDS: Final = ("time", "node", "device", "alert")

_HEAD = b'{"prev":"'
_HASH_MARK = b',"hash":"'
_TAIL_LEN = len(_HASH_MARK) + 64 + 2  # ,"hash":"<64 hex>"}


class LineError(ValueError):
    """A line that is not a well-formed audit record (the message says how)."""


def outcome_for(status: int) -> Outcome:
    """The outcome word for an HTTP-like status (401/403: ``denied``)."""
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    if status < 500:
        return "error"
    return "failure"


def split_path(path: str, prefix: str) -> tuple[str | None, str | None]:
    """``(environment, category)`` of a secret path under ``prefix`` (``None`` if absent)."""
    if not path.startswith(prefix + "/"):
        return None, None
    parts = path[len(prefix) + 1 :].split("/", 2)
    environment = parts[0] or None
    category = parts[1] or None if len(parts) > 1 else None
    return environment, category


@dataclass(slots=True, kw_only=True)
class AuditEvent:
    """One auditable fact, before rendering (see module docstring).

    ``token`` (the credential, kept out of ``repr``) becomes the record's
    ``accessor`` HMAC; every string leaf of ``data`` (the request body, also
    out of ``repr``) is HMAC'd; ``extra`` holds the fields of checkpoint and
    alert records (no secrets).

    Events are shared by every device's lane and the monitor: treat them as
    immutable once built (the class is not frozen only because a frozen
    dataclass costs several microseconds more to build, twice a request).
    """

    kind: Kind
    time: dt.datetime
    request_id: str = ""
    principal: str | None = None
    token: str | None = field(default=None, repr=False)
    auth: str | None = None
    remote: str = ""
    user_agent: str = ""
    operation: str = ""
    path: str = ""
    environment: str | None = None
    category: str | None = None
    version: int | None = None
    status: int | None = None
    error: str | None = None
    emergency: bool = False
    data: object = field(default=None, repr=False)
    extra: Mapping[str, object] | None = None

    def responded(self, completion: Completion) -> AuditEvent:
        """The response event of this request event: the same request, ``completion``'s
        time, status, error and served version (if any), and no ``data`` (a response
        record carries no body)."""
        return AuditEvent(
            kind="response",
            time=completion.time,
            request_id=self.request_id,
            principal=self.principal,
            token=self.token,
            auth=self.auth,
            remote=self.remote,
            user_agent=self.user_agent,
            operation=self.operation,
            path=self.path,
            environment=self.environment,
            category=self.category,
            version=self.version if completion.version is None else completion.version,
            status=completion.status,
            error=completion.error,
            emergency=self.emergency,
        )


class Completion(NamedTuple):
    """How a request ended: what its response record adds to its request record."""

    time: dt.datetime
    status: int
    error: str | None
    version: int | None = None
    """The secret version the response carried (``None``: the request's, if it named one)."""


def refused(completion: Completion) -> Completion:
    """``completion`` of a request refused because its record could not be made durable
    in time (503 ``audit_failure``): an exchange queued while its device hangs is
    recorded with this, not with the answer the request never got."""
    return Completion(completion.time, 503, REFUSED_CODE, None)


REFUSED_CODE: Final = "audit_failure"
"""The error code of a request refused for want of a durable record (``AuditFailure``)."""


class Salter:
    """HMAC-SHA256 of sensitive values with one device's key.

    ``hash(value)`` is ``"hmac-sha256:" + hex``; ``salt(data)`` returns a copy
    of a JSON-like structure whose string, number and boolean leaves are
    hashed (keys and structure kept), which is what a record's ``data`` holds.
    The key never leaves this object (not in ``repr``).
    """

    __slots__ = ("_cache", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("an audit HMAC key has at least 32 bytes")
        self._key = key
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return "Salter(key=**********)"

    def hash(self, value: str | bytes) -> str:
        """``hmac-sha256:<hex>`` of ``value`` (UTF-8 for ``str``)."""
        raw = value.encode() if isinstance(value, str) else value
        return HMAC_PREFIX + hmac.new(self._key, raw, hashlib.sha256).hexdigest()

    def derive(self, label: str) -> bytes:
        """A 32-byte key for another use, named by ``label``: HKDF-SHA256 of the key
        (RFC 5869), whose steps key HMAC with a digest *of* this key, so no
        ``hash`` of any value gives it."""
        kdf = HKDF(hashes.SHA256(), 32, salt=b"medsecrets", info=label.encode())
        return kdf.derive(self._key)

    def accessor(self, token: str) -> str:
        """``hash(token)``, memoised for the (few) live tokens of a server."""
        found = self._cache.get(token)
        if found is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            found = self._cache[token] = self.hash(token)
        return found

    def salt(self, data: object) -> object:
        """``data`` with every leaf value replaced by its HMAC (see class docstring).

        Bounded, since a body is sent by anyone who reaches the port (a failed
        request is recorded too): a key over ``MAX_DATA_KEY`` characters is
        replaced by its HMAC, and a body of more than ``MAX_DATA_VALUES`` leaves
        and containers, or nested deeper than ``MAX_DATA_DEPTH``, is recorded as
        ``LARGE_DATA`` only. A record's ``data`` is then a few KiB at most.
        """
        if data is None:
            return None
        if not _within_bounds(data):
            return LARGE_DATA
        return self._salt(data)

    def _salt(self, data: object) -> object:
        if isinstance(data, Mapping):
            return {self._salt_key(k): self._salt(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self._salt(v) for v in data]
        if isinstance(data, bool):
            return self.hash("true" if data else "false")
        if isinstance(data, str | int | float):
            return self.hash(str(data))
        return self.hash(repr(type(data)))

    def _salt_key(self, key: object) -> str:
        text = str(key)
        return text if len(text) <= MAX_DATA_KEY else self.hash(text)


MAX_DATA_KEY: Final = 128
"""The longest ``data`` key recorded as it is (a field name has at most 128 characters)."""
MAX_DATA_VALUES: Final = 64
"""The most leaves and containers a recorded ``data`` holds."""
MAX_DATA_DEPTH: Final = 8
"""The deepest nesting a recorded ``data`` holds."""
LARGE_DATA: Final = "[not recorded: too large]"
"""A record's ``data`` for a body over the bounds of ``Salter.salt``."""


def _within_bounds(data: object) -> bool:
    """Whether ``data`` has at most ``MAX_DATA_VALUES`` nodes, none deeper than
    ``MAX_DATA_DEPTH`` (walked without recursion, stopping at the first excess)."""
    pending: list[tuple[object, int]] = [(data, 0)]
    count = 0
    while pending:
        node, depth = pending.pop()
        count += 1
        if count > MAX_DATA_VALUES or depth > MAX_DATA_DEPTH:
            return False
        if isinstance(node, Mapping):
            pending.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list | tuple):
            pending.extend((value, depth + 1) for value in node)
    return True


_SECOND: list[tuple[tuple[int, ...], str]] = [((), "")]
_STAMP: list[tuple[int | None, str]] = [(None, "")]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def format_time(value: dt.datetime) -> str:
    """A record's ``time``: ISO 8601 UTC with microseconds and ``Z``."""
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    key = (value.second, value.minute, value.hour, value.day, value.month, value.year)
    cached = _SECOND[0]  # one tuple, swapped whole: safe across threads
    if cached[0] != key:  # one strftime per second, not per record
        cached = _SECOND[0] = (key, _second_text(value))
    return f"{cached[1]}{value.microsecond:06d}Z"


def format_stamp(seconds: int, micro: int) -> str:
    """``format_time`` of the instant ``seconds`` (POSIX) and ``micro`` microseconds after."""
    if not 0 <= micro < 1_000_000:  # (never from ``packed.stamp``): carried, as timedelta does
        seconds, micro = seconds + micro // 1_000_000, micro % 1_000_000
    cached = _STAMP[0]  # one tuple, swapped whole: safe across threads
    if cached[0] != seconds:
        cached = _STAMP[0] = (seconds, _second_text(_EPOCH + dt.timedelta(seconds=seconds)))
    return f"{cached[1]}{micro:06d}Z"


def _second_text(value: dt.datetime) -> str:
    """``value`` (UTC) to the second, with the ``.`` before the microseconds."""
    # not strftime("%Y"): it gives "999" for the year 999, and the text must sort
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}."
    )


SEALED_DATA: Final = "[not recorded: sealed]"
"""A record's ``data`` when it was rendered without a key (the barrier was sealed)."""


def render_line(
    event: AuditEvent, *, seq: int, prev: str, node: str, device: str, salter: Salter | None
) -> tuple[bytes, str]:
    """The record line (with ``\\n``) for ``event`` at ``seq`` after ``prev``, and its hash.

    Without a ``salter`` (no HMAC key while sealed) nothing sensitive is
    recorded: ``accessor`` is ``null`` and a non-empty ``data`` is ``SEALED_DATA``.
    """
    kind = event.kind
    if kind not in ("request", "response"):
        extra = event.extra or {}
        body = {"time": format_time(event.time), "node": node, "device": device, **extra}
        head = f'{{"prev":"{prev}","seq":{seq},"kind":"{kind}",'
        return _hashed(head.encode() + orjson.dumps(body)[1:-1])
    response = kind == "response"
    status = event.status if response else None
    return _hashed(
        _head(prev, seq, kind, format_time(event.time))
        + _shared(event, node, device, salter)
        + _tail(
            event.version,
            status,
            event.error if response else None,
            orjson.dumps(event.emergency),
            record_data(event.data, salter),
        )
    )


def render_exchange(
    request: AuditEvent,
    completion: Completion,
    *,
    seq: int,
    prev: str,
    node: str,
    device: str,
    salter: Salter | None,
) -> tuple[bytes, str, bytes, str]:
    """The lines and hashes of ``request`` (a request event) at ``seq`` after ``prev`` and
    of its response ``request.responded(completion)`` at ``seq + 1``: what two
    ``render_line`` calls give, in about three quarters of their time, as the fields the two
    records share (``node`` to ``category``) are rendered once and the response event is
    never built (``tests/audit/test_render_exchange.py``)."""
    return render_pair(
        _shared(request, node, device, salter),
        (format_time(request.time), format_time(completion.time)),
        seq=seq,
        prev=prev,
        version=request.version,
        status=completion.status,
        error=completion.error,
        served=completion.version,
        emergency=request.emergency,
        data=record_data(request.data, salter),
    )


def shared_fields(
    fields: tuple[
        str, str | None, str | None, str | None, str, str, str, str, str | None, str | None
    ],
    *,
    node: str,
    device: str,
    salter: Salter | None,
) -> bytes:
    """The part of a request's two records from ``"node":`` to ``"category":…`` (``FIELDS``
    order, no braces), for ``fields``: request id, principal, token (rendered as its
    ``accessor``, ``null`` without ``salter``), auth, remote, user agent, operation, path,
    environment and category."""
    request_id, principal, token, auth, remote, agent, operation, path, env, category = fields
    return orjson.dumps(
        {
            "node": node,
            "device": device,
            "request_id": request_id,
            "principal": principal,
            "accessor": salter.accessor(token) if token and salter else None,
            "auth": auth,
            "remote": remote,
            "user_agent": agent,
            "operation": operation,
            "path": path,
            "environment": env,
            "category": category,
        }
    )[1:-1]


def render_pair(
    shared: bytes,
    times: tuple[str, str],
    *,
    seq: int,
    prev: str,
    version: int | None,
    status: int,
    error: str | None,
    served: int | None,
    emergency: bool,
    data: object,
) -> tuple[bytes, str, bytes, str]:
    """``render_exchange``'s lines and hashes from their parts: ``shared_fields``, the
    two records' ``time`` texts, the request's ``version``, its answer's ``status``,
    ``error`` and ``served`` version (``None``: the request's), ``emergency``, and the
    request's ``data`` as recorded (salted already)."""
    flag = orjson.dumps(emergency)  # as render_line writes it
    first, first_hash = _hashed(
        _head(prev, seq, "request", times[0]) + shared + _tail(version, None, None, flag, data)
    )
    second, second_hash = _hashed(
        _head(first_hash, seq + 1, "response", times[1])
        + shared
        + _tail(version if served is None else served, status, error, flag, None)
    )
    return first, first_hash, second, second_hash


def _head(prev: str, seq: int, kind: str, time: str) -> bytes:
    """A request or response record up to its ``time`` (with the comma after it)."""
    return f'{{"prev":"{prev}","seq":{seq},"kind":"{kind}","time":"{time}",'.encode()


_SHARED = operator.attrgetter(
    *(
        "token" if name == "accessor" else name  # the token, rendered as its accessor
        for name in FIELDS[FIELDS.index("request_id") : FIELDS.index("version")]
    )
)
"""An event's fields for ``shared_fields``: ``FIELDS`` from ``request_id`` to ``category``."""


def _shared(event: AuditEvent, node: str, device: str, salter: Salter | None) -> bytes:
    """``shared_fields`` of ``event``."""
    return shared_fields(_SHARED(event), node=node, device=device, salter=salter)


def _tail(
    version: int | None, status: int | None, error: str | None, emergency: bytes, data: object
) -> bytes:
    """``,"version":…`` to ``"data":…`` (``FIELDS`` order), ``emergency`` already JSON."""
    return b"".join(
        (
            b',"version":',
            orjson.dumps(version),
            b',"outcome":',
            orjson.dumps(outcome_for(status) if status is not None else None),
            b',"status":',
            orjson.dumps(status),
            b',"error":',
            orjson.dumps(error),
            b',"emergency":',
            emergency,
            b',"data":',
            orjson.dumps(data),
        )
    )


def record_data(data: object, salter: Salter | None) -> object:
    """A record's ``data``: ``data`` salted, or ``SEALED_DATA`` for a body while sealed."""
    if data is None:
        return None
    return salter.salt(data) if salter is not None else SEALED_DATA


def _hashed(text: bytes) -> tuple[bytes, str]:
    """``text`` (a record without its hash and closing brace) as a line, and its hash."""
    digest = hashlib.sha256(text + b"}").hexdigest()
    return text + b',"hash":"' + digest.encode() + b'"}\n', digest


def split_line(line: bytes) -> tuple[str, int, str]:
    """``(prev, seq, hash)`` of a record line (with or without ``\\n``), by position.

    Raises ``LineError`` when the line does not have the record layout.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    if not line.startswith(_HEAD) or len(line) < 84 + _TAIL_LEN:
        raise LineError("not an audit record (bad head)")
    if line[73:80] != b'","seq"' or line[80:81] != b":":
        raise LineError("not an audit record (bad prev/seq)")
    end = line.find(b",", 81)
    if end < 0:
        raise LineError("not an audit record (no seq)")
    try:
        seq = int(line[81:end])
    except ValueError:
        raise LineError("not an audit record (bad seq)") from None
    tail = line[-_TAIL_LEN:]
    if not tail.startswith(_HASH_MARK) or not tail.endswith(b'"}'):
        raise LineError("not an audit record (bad hash)")
    return line[9:73].decode("ascii", "replace"), seq, tail[9:73].decode("ascii", "replace")


def body_digest(line: bytes) -> str:
    """The hash a record line should carry (SHA-256 hex of the line without its hash)."""
    if line.endswith(b"\n"):
        line = line[:-1]
    return hashlib.sha256(line[:-_TAIL_LEN] + b"}").hexdigest()


def parse_line(line: bytes) -> dict[str, object]:
    """The JSON object a stored line holds, parsed exactly as strictly as ``render_line``
    writes it (orjson, both ways).

    So whatever a reader gets can be written out again as JSON and as UTF-8: a line the
    writer cannot have made (invalid UTF-8, a lone surrogate escape such as
    ``"\\ud800"``, ``NaN`` or ``Infinity``, a number too large for a double, nesting
    deeper than 1024) is refused, where the standard library's ``json`` accepts most of
    these. Raises ``LineError`` (``not a JSON record``, ``not a JSON object``); the
    caller adds the file and line.
    """
    try:
        found = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise LineError("not a JSON record") from None
    if not isinstance(found, dict):
        raise LineError("not a JSON object")
    return found


def is_record(record: Mapping[str, object]) -> bool:
    """Whether a parsed line has what every audit record has (a sealed one included):
    ``kind`` and ``hash`` strings and an integer ``seq`` (not a boolean)."""
    seq = record.get("seq")
    return (
        isinstance(record.get("kind"), str)
        and isinstance(record.get("hash"), str)
        and isinstance(seq, int)
        and not isinstance(seq, bool)
    )
