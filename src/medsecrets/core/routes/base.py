"""What a route is: ``RouteSpec`` (one per endpoint), the parsed ``Call`` a handler gets,
the ``Context`` it works in, and the strict body and query parsers.

Bodies are frozen dataclasses parsed with ``medsecrets.wire.from_wire`` after
an unknown-field check (recursive through nested dataclasses); query
parameters are declared with ``QueryParam`` and parsed strictly (unknown or
repeated parameters and wrong types are ``InvalidRequest`` naming the
parameter). The API layer and the OpenAPI document are generated from the
same specs, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import Clock
from medsecrets.core.audit import AuditAdmin
from medsecrets.core.request import Request
from medsecrets.errors import InvalidRequest, quote
from medsecrets.schema.seal import SealType
from medsecrets.schema.tokens import TokenInfo
from medsecrets.store import SecretStore
from medsecrets.wire import from_wire

__all__ = [
    "Call",
    "Context",
    "Handler",
    "QueryParam",
    "RouteSpec",
    "no_body",
    "parse_body",
    "parse_query",
    "quote",
]

T = TypeVar("T")

_INT = re.compile(r"-?[0-9]{1,64}")
_INT_BOUND = 2**63 - 1
"""Query integers lie within a signed 64-bit integer (any client's integer type)."""


@dataclass(frozen=True, slots=True)
class Context:
    """What handlers work with."""

    store: SecretStore
    tokens: TokenStore
    clock: Clock
    version: str
    audit: AuditAdmin | None = None
    seal_type: SealType | None = None
    """The seal type the server's configuration names (setting ``seal.type``), if any:
    ``sys/init`` refuses another (the server would not start again on that store)."""


@dataclass(slots=True)
class Call:
    """A request after parsing: the resource ``path``, the typed ``body`` and ``query``.

    Treat as immutable (not frozen only to keep its construction cheap: one per request).
    """

    request: Request
    path: str
    body: object
    query: Mapping[str, object]
    principal: TokenInfo | None


Handler = Callable[[Context, Call], object]
"""Runs a call; returns a value ``to_wire`` understands, or a ready JSON ``dict`` (hot paths)."""


@dataclass(frozen=True, slots=True)
class QueryParam:
    """One query parameter: ``str``, ``int`` or ``bool`` (``true``/``false``)."""

    name: str
    type: type[str] | type[int] | type[bool]
    _: dataclasses.KW_ONLY
    description: str = ""
    repeatable: bool = False
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None
    required: bool = False
    """Documented as required (the route refuses a call without it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    """One endpoint.

    ``capability`` is what the token must hold (``None``: any valid token, or
    none at all when ``open``); ``authz_path`` gives the path it must hold it
    on (``None`` from it: the capability alone decides). ``sealed_ok`` routes
    are served while sealed. ``statuses`` are the error statuses of the route's
    own work (a conflict, a KMS failure, 403 from an open route...); the
    OpenAPI document adds those that follow from the declaration
    (``api.openapi.error_statuses``). ``None``: not declared, documented with
    every status a route's work may answer.
    """

    name: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    url: str
    handler: Handler
    summary: str
    capability: str | None = None
    open: bool = False
    sealed_ok: bool = False
    body: type | None = None
    body_required: bool = False
    query: tuple[QueryParam, ...] = ()
    authz_path: Callable[[Call], str | None] | None = None
    lists: bool = False
    """``authz_path`` gives a listing's string prefix: the token must cover every path that
    starts with it (``schema.tokens.covers_listing``), not only the prefix itself."""
    list_scope: Callable[[Call], str | None] | None = None
    """For a listing: the subtree its filters confine it to (``<prefix>/<environment>``,
    ``/<category>`` too), or ``None``; a token covering it may list too, whatever the
    string prefix (everything listed lies in both)."""
    response: object = None
    statuses: tuple[int, ...] | None = None
    parser: Callable[[object], object] | None = None
    returns_secret: bool = False
    slow: bool = False
    """Reads that may take long (scanning the audit log): never run on the event loop."""
    loop_write: bool = False
    """A change cheap enough to route on the event loop: its storage writes return at
    commit (``DefersDurability``) and the transport awaits their durability before it
    records the outcome. Only for bounded CPU work whose one blocking call is storage."""

    def parse(self, data: object) -> object:
        """The typed body of a call (``None`` for routes without a body)."""
        if self.parser is not None:
            return self.parser(data)
        if self.body is None:
            no_body(data)
            return None
        if data is None and not self.body_required:
            data = {}
        return parse_body(self.body, data)


def _dataclass_of(tp: object) -> list[type]:
    """The dataclass types ``tp`` is, or holds directly (``X | None``, ``tuple[X, ...]``)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return [tp]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, tuple, list):
        found: list[type] = []
        for arg in typing.get_args(tp):
            found += _dataclass_of(arg)
        return found
    return []


@functools.cache
def _shape(cls: type) -> tuple[frozenset[str], dict[str, list[type]]]:
    """The init field names of dataclass ``cls`` and the dataclasses each field holds
    (computed once per class: resolving its type hints costs tens of microseconds)."""
    hints = typing.get_type_hints(cls)
    names = frozenset(f.name for f in dataclasses.fields(cls) if f.init)
    return names, {name: _dataclass_of(hints[name]) for name in names}


def _check_unknown(cls: type, data: object, where: str) -> None:
    if not isinstance(data, dict):
        return
    names, nested_types = _shape(cls)
    for key in data:
        if key not in names:
            raise InvalidRequest(f"{where}: unknown field {quote(str(key))}")
    for name, value in data.items():
        for nested in nested_types[name]:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _check_unknown(nested, item, f"{where}.{name}[{i}]")
            else:
                _check_unknown(nested, value, f"{where}.{name}")


def parse_body(cls: type[T], data: object, *, where: str = "body") -> T:
    """``data`` as ``cls`` (a dataclass): unknown fields and wrong types are refused."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where}: expected a JSON object")
    _check_unknown(cls, data, where)
    return from_wire(cls, data, where=where)


def no_body(data: object) -> None:
    """Refuse a body on a route that takes none (``{}`` is accepted)."""
    if data is None or data == {}:
        return
    if isinstance(data, dict):
        raise InvalidRequest(f"body: unknown field {quote(str(next(iter(data))))}")
    raise InvalidRequest("body: this route takes no body (send none or {})")


def parse_query(
    params: tuple[QueryParam, ...], query: Mapping[str, tuple[str, ...]]
) -> dict[str, object]:
    """Typed query values by name (absent ones left out; repeatable ones as tuples)."""
    if not query:
        return {}
    by_name = {p.name: p for p in params}
    parsed: dict[str, object] = {}
    for name, values in query.items():
        spec = by_name.get(name)
        if spec is None:
            raise InvalidRequest(f"unknown query parameter {quote(name)}")
        if not spec.repeatable and len(values) > 1:
            raise InvalidRequest(f"query parameter {name!r} given more than once")
        items = tuple(_query_value(spec, v) for v in values)
        parsed[name] = items if spec.repeatable else items[0]
    return parsed


def _query_value(spec: QueryParam, value: str) -> object:
    if spec.type is bool:
        if value not in ("true", "false"):
            raise InvalidRequest(f"query parameter {spec.name!r} must be true or false")
        return value == "true"
    if spec.type is int:
        if not _INT.fullmatch(value):
            raise InvalidRequest(f"query parameter {spec.name!r} must be an integer")
        number = int(value)
        if (spec.minimum is not None and number < spec.minimum) or (
            spec.maximum is not None and number > spec.maximum
        ):
            raise InvalidRequest(f"query parameter {spec.name!r} must be {_range_text(spec)}")
        if not -_INT_BOUND - 1 <= number <= _INT_BOUND:  # a long number is out of range too
            low = spec.minimum if spec.minimum is not None else -_INT_BOUND - 1
            high = spec.maximum if spec.maximum is not None else _INT_BOUND
            raise InvalidRequest(f"query parameter {spec.name!r} must be from {low} to {high}")
        return number
    if len(value) > 1024 or "\x00" in value:
        raise InvalidRequest(f"query parameter {spec.name!r} is too long or contains NUL")
    if spec.enum is not None and value not in spec.enum:
        raise InvalidRequest(f"query parameter {spec.name!r} must be one of {', '.join(spec.enum)}")
    return value


def _range_text(spec: QueryParam) -> str:
    """``from 1 to 10``, ``1 or more`` or ``10 or less``: the bounds ``spec`` declares."""
    if spec.minimum is not None and spec.maximum is not None:
        return f"from {spec.minimum} to {spec.maximum}"
    if spec.minimum is not None:
        return f"{spec.minimum} or more"
    return f"{spec.maximum} or less"
