"""Audit and alert routes: ``/v1/sys/audit/*`` and ``/v1/sys/alerts``.

All need ``sudo`` on ``sys/audit`` (``sys/alerts`` for alerts): the audit trail
says who read what, which is itself sensitive. They answer 404 when the server
has no audit trail to serve (``Context.audit`` is ``None``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from medsecrets.core.audit import AuditAdmin
from medsecrets.core.routes.base import Call, Context, QueryParam, RouteSpec
from medsecrets.engines.secrets.paths import parse_path
from medsecrets.errors import InvalidRequest, NotFoundError
from medsecrets.schema.audit import (
    AlertList,
    AuditDevices,
    AuditHash,
    AuditPublicKey,
    AuditReads,
    AuditRecords,
    AuditVerification,
)
from medsecrets.sensitive import Sensitive

__all__ = ["routes"]

MAX_LIMIT = 10_000

_NO_TRAIL = (404,)
"""The statuses of every audit route's own work: 404 when the server has no audit trail to
serve (or none a query can read back, or no device of the name given); its other refusals
(a malformed filter or path, a device that cannot be read back) are 400."""


@dataclass(frozen=True, slots=True)
class HashBody:
    """``POST /v1/sys/audit/hash``: the value to HMAC and, optionally, the device."""

    input: Sensitive[str]
    device: str | None = None


def _admin(ctx: Context) -> AuditAdmin:
    if ctx.audit is None:
        raise NotFoundError("this server has no audit trail to query")
    return ctx.audit


def _time(name: str, value: object) -> dt.datetime | None:
    if value is None:
        return None
    assert isinstance(value, str)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"query parameter {name!r}: an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # its offset takes it out of the years 1 to 9999
        raise InvalidRequest(
            f"query parameter {name!r}: out of range once in UTC (years 1 to 9999)"
        ) from None


def audit_hash(ctx: Context, call: Call) -> AuditHash:
    body = call.body
    assert isinstance(body, HashBody)
    return _admin(ctx).hash(body.input.reveal(), body.device)


def devices(ctx: Context, call: Call) -> AuditDevices:
    return _admin(ctx).devices()


def search(ctx: Context, call: Call) -> AuditRecords:
    query = dict(call.query)
    limit = query.pop("limit", 100)
    assert isinstance(limit, int)
    for name in ("since", "until"):
        query[name] = _time(name, query.get(name))
    return _admin(ctx).search({k: v for k, v in query.items() if v is not None}, limit)


def who_read(ctx: Context, call: Call) -> AuditReads:
    path = call.query.get("path")
    if not isinstance(path, str) or not path:
        raise InvalidRequest("query parameter 'path' is required")
    # The secret routes' naming rules: a path no secret can have is a 400, not an empty
    # answer. Any category, though: the reads of one since removed from the catalog must
    # stay answerable (compromise response looks back).
    admin = _admin(ctx)
    secret = str(parse_path(path, prefix=ctx.store.catalog.prefix, categories=None))
    return admin.who_read(secret, _time("since", call.query.get("since")))


def verify(ctx: Context, call: Call) -> AuditVerification:
    device = call.query.get("device")
    return _admin(ctx).verify(device if isinstance(device, str) else None)


def public_key(ctx: Context, call: Call) -> AuditPublicKey:
    return _admin(ctx).public_key()


def alerts(ctx: Context, call: Call) -> AlertList:
    limit = call.query.get("limit", 50)
    assert isinstance(limit, int)
    return _admin(ctx).alerts(limit)


_FILTERS = (
    QueryParam("principal", str, description="principal (token display name)"),
    QueryParam("path_prefix", str, description="secret path prefix"),
    QueryParam("category", str, description="secret category"),
    QueryParam("environment", str, description="environment"),
    QueryParam("operation", str, description="operation (route name, e.g. secrets.read)"),
    QueryParam(
        "outcome", str, description="outcome", enum=("success", "denied", "error", "failure")
    ),
    QueryParam(
        "kind", str, description="record kind", enum=("request", "response", "checkpoint", "alert")
    ),
    QueryParam("since", str, description="ISO 8601 time (inclusive)"),
    QueryParam("until", str, description="ISO 8601 time (exclusive)"),
    QueryParam("limit", int, description="most records returned", minimum=1, maximum=MAX_LIMIT),
)


def routes() -> tuple[RouteSpec, ...]:
    """The audit and alert route specs."""
    return (
        RouteSpec(
            name="sys.audit.hash",
            method="POST",
            url="/v1/sys/audit/hash",
            handler=audit_hash,
            summary="The HMAC an audit device writes for a value (to search the log for it)",
            capability="sudo",
            authz_path=lambda call: "sys/audit",
            body=HashBody,
            body_required=True,
            response=AuditHash,
            statuses=_NO_TRAIL,
        ),
        RouteSpec(
            name="sys.audit.devices",
            method="GET",
            url="/v1/sys/audit/devices",
            handler=devices,
            summary="Audit devices and their health",
            capability="sudo",
            authz_path=lambda call: "sys/audit",
            response=AuditDevices,
            statuses=_NO_TRAIL,
        ),
        RouteSpec(
            name="sys.audit.search",
            method="GET",
            slow=True,
            url="/v1/sys/audit/search",
            handler=search,
            summary="Search the audit trail (a database or file device)",
            capability="sudo",
            authz_path=lambda call: "sys/audit",
            query=_FILTERS,
            response=AuditRecords,
            statuses=_NO_TRAIL,
        ),
        RouteSpec(
            name="sys.audit.who_read",
            method="GET",
            slow=True,
            url="/v1/sys/audit/who-read",
            handler=who_read,
            summary="Every read of a secret since a time: by whom, from where, when",
            capability="sudo",
            authz_path=lambda call: "sys/audit",
            query=(
                QueryParam("path", str, description="secret path", required=True),
                QueryParam("since", str, description="ISO 8601 time"),
            ),
            response=AuditReads,
            statuses=_NO_TRAIL,
        ),
        RouteSpec(
            name="sys.audit.verify",
            method="GET",
            slow=True,
            url="/v1/sys/audit/verify",
            handler=verify,
            summary="Verify a device's hash chain and signed checkpoints on the server",
            capability="sudo",
            authz_path=lambda call: "sys/audit",
            query=(QueryParam("device", str, description="device name (default: first readable)"),),
            response=AuditVerification,
            statuses=_NO_TRAIL,
        ),
        RouteSpec(
            name="sys.audit.public_key",
            method="GET",
            url="/v1/sys/audit/public-key",
            handler=public_key,
            summary="The Ed25519 key that signs audit checkpoints",
            capability="sudo",
            authz_path=lambda call: "sys/audit",
            response=AuditPublicKey,
            statuses=_NO_TRAIL,
        ),
        RouteSpec(
            name="sys.alerts",
            method="GET",
            slow=True,
            url="/v1/sys/alerts",
            handler=alerts,
            summary="Recent anomaly alerts and their delivery",
            capability="sudo",
            authz_path=lambda call: "sys/alerts",
            query=(QueryParam("limit", int, description="most alerts", minimum=1, maximum=1000),),
            response=AlertList,
            statuses=_NO_TRAIL,
        ),
    )
