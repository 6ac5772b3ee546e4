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
from typing import Literal

__all__ = ["Alert", "Severity"]

Severity = Literal["info", "low", "medium", "high", "critical"]


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
