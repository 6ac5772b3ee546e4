"""A token that mints children is one principal to the detectors: counted together and
judged against its own baselines, online (audit events) and offline (our records)."""

from __future__ import annotations

import datetime as dt
import json

from medsecrets.audit.record import AuditEvent, render_line
from medsecrets.monitor.detectors import DetectorSet
from medsecrets.monitor.engine import access_event
from medsecrets.monitor.events import AccessEvent, lineage
from medsecrets.monitor.sources import event_from_record

T0 = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


def _reads(children: int, each: int) -> list[AuditEvent]:
    """``each`` reads of distinct secrets by each of ``children`` children of svc-billing."""
    return [
        AuditEvent(
            kind="response",
            time=T0 + dt.timedelta(seconds=child * each + n),
            request_id=f"r{child}-{n}",
            principal=f"svc-billing/w{child}",
            remote="10.1.1.5",
            operation="secrets.read",
            path=f"medessence/development/database/s{child}-{n}",
            environment="development",
            category="database",
            status=200,
        )
        for child in range(children)
        for n in range(each)
    ]


def test_lineage_is_the_first_segment() -> None:
    assert lineage("svc-billing/w0") == "svc-billing"
    assert lineage("svc-billing/w0/x") == "svc-billing"
    assert lineage("svc-billing") == "svc-billing"
    assert lineage("") == ""


def _alerts(events: list[AccessEvent]) -> list[tuple[str, str | None]]:
    found = DetectorSet.default().observe_many(events)  # (index, alert) pairs
    return sorted({(alert.detector, alert.principal) for _, alert in found})


def test_children_are_counted_as_their_lineage_online_and_offline() -> None:
    audit = _reads(children=3, each=19)  # 57 reads, none over 50 for one child
    online = [event for event in map(access_event, audit) if event is not None]
    offline = []
    for number, event in enumerate(audit, 1):
        line, _ = render_line(event, seq=number, prev="0" * 64, node="n", device="d", salter=None)
        found = event_from_record(json.loads(line))
        assert found is not None
        offline.append(found)
    assert online == offline
    assert {event.principal for event in online} == {"svc-billing"}
    alerts = _alerts(online)
    assert ("rate", "svc-billing") in alerts
    assert ("bulk", "svc-billing") in alerts
