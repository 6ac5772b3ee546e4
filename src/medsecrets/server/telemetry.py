"""``build_metrics``: the server's Prometheus metrics and where their values come from.

Request counts and latencies are observed by the API layer; everything else is
read at scrape time from the parts that know it (seal state from the store,
device health from the audit broker, detector and alert counters from the
monitor), so nothing extra runs on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable

from medsecrets.api.metrics import (
    ALERTS,
    ALERTS_PENDING,
    ALERTS_UNAUDITED,
    ANOMALIES,
    AUDIT_DELIVERY_FAILURES,
    AUDIT_DEVICE_FAILURES,
    AUDIT_DEVICE_UP,
    AUDIT_DROPPED,
    AUDIT_RECORDS,
    AUDIT_SPOOL_PENDING,
    MONITOR_DROPPED_EVENTS,
    SEALED,
    Metrics,
    Sample,
    scalar,
)
from medsecrets.core.handler import Core
from medsecrets.server.auditsetup import AuditStack

__all__ = ["build_metrics"]


def build_metrics(core: Core, stack: AuditStack) -> Metrics:
    """Metrics for ``core`` and its audit ``stack`` (see module docstring)."""
    names = [spec.name for spec in core.routes.values()] + ["openapi", "docs", "metrics"]
    metrics = Metrics(routes=names)
    metrics.provide(SEALED, scalar(lambda: core.store.barrier.sealed))
    broker = stack.broker
    if broker is not None:

        def device(key: str) -> Iterable[Sample]:
            return [((str(h["name"]),), float(h[key])) for h in broker.health()]  # type: ignore[arg-type]

        metrics.provide(AUDIT_DEVICE_UP, lambda: device("up"))
        metrics.provide(AUDIT_DEVICE_FAILURES, lambda: device("failures"))
        metrics.provide(AUDIT_RECORDS, lambda: device("records"))
        metrics.provide(AUDIT_DROPPED, lambda: device("dropped"))

        def forwarding(key: str) -> Iterable[Sample]:
            return [
                ((str(h["name"]),), float(h[key]))  # type: ignore[arg-type]
                for h in broker.health()
                if isinstance(h.get(key), int)
            ]

        metrics.provide(AUDIT_SPOOL_PENDING, lambda: forwarding("spool_pending"))
        metrics.provide(AUDIT_DELIVERY_FAILURES, lambda: forwarding("delivery_failures"))
    if stack.monitor is not None or stack.alerts_in is not None:  # in process or not
        metrics.provide(
            ANOMALIES,
            lambda: [((name,), float(n)) for name, n in stack.anomaly_counts().items()],
        )
        metrics.provide(MONITOR_DROPPED_EVENTS, scalar(stack.dropped_events))
    if stack.dispatcher is not None:
        metrics.provide(
            ALERTS,
            lambda: [
                ((channel, status), float(n))
                for (channel, status), n in stack.alert_counts().items()
            ],
        )
        metrics.provide(
            ALERTS_PENDING,
            lambda: [((channel,), float(n)) for channel, n in stack.alert_pending().items()],
        )
        metrics.provide(ALERTS_UNAUDITED, scalar(stack.unaudited_alerts))
    return metrics
