"""``Alert``: what a detector raises and an alert channel delivers.

Alerts carry principals, paths, addresses and counts: never a secret value
nor a token (principals are token display names or ids, accessors are HMACs).
``key`` identifies the alert for deduplication: two alerts with the same
``detector`` and ``key`` within the dedup window are one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

__all__ = ["Alert", "Severity", "critical_reserve"]

Severity = Literal["info", "low", "medium", "high", "critical"]


def critical_reserve(size: int) -> int:
    """The places of a queue of ``size`` that only critical work may take: its last tenth
    (the dispatcher's queues keep them for critical alerts, the monitor's for the events
    that raise them), so a flood of lesser work cannot crowd out a honeytoken read or an
    emergency credential's use."""
    return size // 10


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One raised anomaly (see module docstring)."""

    detector: str
    """Detector name: ``rate``, ``bulk``, ``enumeration``, ``failed_burst``,
    ``unusual_time``, ``new_source``, ``first_category``, ``emergency``,
    ``honeytoken``."""
    severity: Severity
    time: dt.datetime
    """Time of the event that raised it (event time, not wall-clock, offline)."""
    summary: str
    """One line for a human: what happened, by whom (no secret values)."""
    key: str
    """Deduplication key within the detector (e.g. the principal, or principal+path)."""
    principal: str | None = None
    source: str | None = None
    path: str | None = None
    category: str | None = None
    environment: str | None = None
    count: int = 1
    details: Mapping[str, object] = field(default_factory=dict)
    """Extra JSON-able facts (thresholds, windows, sample request ids)."""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (time as ISO 8601 UTC)."""
        return {
            "detector": self.detector,
            "severity": self.severity,
            "time": self.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "summary": self.summary,
            "key": self.key,
            "principal": self.principal,
            "source": self.source,
            "path": self.path,
            "category": self.category,
            "environment": self.environment,
            "count": self.count,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> Alert:
        """The alert of ``to_dict()`` (``KeyError``, ``TypeError`` or ``ValueError`` if not one)."""
        time = dt.datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00"))
        details = doc.get("details") or {}
        if not isinstance(details, Mapping):
            raise TypeError("alert details must be an object")
        count = doc.get("count", 1)
        if not isinstance(count, int):
            raise TypeError("alert count must be an integer")
        optional = {
            name: None if doc.get(name) is None else str(doc.get(name))
            for name in ("principal", "source", "path", "category", "environment")
        }
        severity = doc["severity"]
        if severity not in get_args(Severity):
            raise ValueError(f"unknown alert severity {severity!r}")
        return cls(
            detector=str(doc["detector"]),
            severity=cast(Severity, severity),
            time=time,
            summary=str(doc["summary"]),
            key=str(doc["key"]),
            count=count,
            details=dict(details),
            **optional,
        )
