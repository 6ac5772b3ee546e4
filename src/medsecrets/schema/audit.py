"""Audit and alerts on the wire: device health, HMACs, query results, alerts.

Records and alerts travel as the JSON objects they are stored as (see
``audit.record`` for the record fields, ``monitor.alert`` for alerts): they
hold no secret values, only HMACs of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "AlertList",
    "AuditDeviceHealth",
    "AuditDevices",
    "AuditHash",
    "AuditPublicKey",
    "AuditRead",
    "AuditReads",
    "AuditRecords",
    "AuditVerification",
]


@dataclass(frozen=True, slots=True)
class AuditHash:
    """``POST /v1/sys/audit/hash``: the HMAC a device writes for a value."""

    device: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditDeviceHealth:
    """One audit device: is it accepting records, how many, how many failures."""

    name: str
    required: bool
    up: bool
    records: int
    failures: int
    dropped: int
    pending: int
    seq: int
    last_error: str | None
    spool_pending: int | None = None
    """A forwarding device (http): records spooled locally, not yet delivered."""
    delivery_error: str | None = None
    """A forwarding device: the kind of its last failed delivery (``None``: it delivers)."""
    delivery_failures: int | None = None
    """A forwarding device: failed deliveries in a row (0 once one succeeds)."""
    last_delivered_at: str | None = None
    """A forwarding device: when a batch was last delivered (ISO 8601)."""


@dataclass(frozen=True, slots=True)
class AuditDevices:
    """``GET /v1/sys/audit/devices``."""

    devices: tuple[AuditDeviceHealth, ...]


@dataclass(frozen=True, slots=True)
class AuditRecords:
    """``GET /v1/sys/audit/search``: matching records, oldest first; ``truncated`` at ``limit``."""

    device: str
    records: tuple[Mapping[str, object], ...]
    truncated: bool
    unreadable: int = 0
    """Lines of the log that could not be read and were left out (``audit verify`` says why)."""


@dataclass(frozen=True, slots=True)
class AuditRead:
    """One successful read of a secret: who, from where, when, which version."""

    time: str
    principal: str | None
    accessor: str | None
    remote: str
    user_agent: str
    path: str
    version: int | None
    request_id: str


@dataclass(frozen=True, slots=True)
class AuditReads:
    """``GET /v1/sys/audit/who-read``: every read of a secret since a time, oldest first."""

    device: str
    path: str
    reads: tuple[AuditRead, ...]
    unreadable: int = 0
    """Lines of the log that could not be read and were left out (``audit verify`` says why)."""


@dataclass(frozen=True, slots=True)
class AuditPublicKey:
    """``GET /v1/sys/audit/public-key``: the Ed25519 key that signs checkpoints."""

    key_id: str
    public_key_pem: str


@dataclass(frozen=True, slots=True)
class AlertList:
    """``GET /v1/sys/alerts``: recent alerts, newest first, with their delivery status."""

    alerts: tuple[Mapping[str, object], ...]


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """``GET /v1/sys/audit/verify``: the server checked a device's chain and checkpoints.

    ``first_bad_index`` is the 0-based record index of the first bad record
    (``None`` when ``ok``, or for a forged exported checkpoint), ``problem`` a
    short reason (never record content).
    """

    device: str
    ok: bool
    records: int
    checkpoints_verified: int
    first_bad_index: int | None
    first_bad_seq: int | None
    problem: str | None
    last_seq: int
