"""``packed_access_event``: the detectors' view of a packed response event (the audit
process's and the monitor process's path) is what ``access_event`` made of the
``AuditEvent``: the time as ``datetime.timestamp()`` gives it, to the microsecond."""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from medsecrets.audit.packed import pack_event, stamp_of
from medsecrets.audit.record import AuditEvent, outcome_for
from medsecrets.monitor.engine import access_event, packed_access_event
from medsecrets.monitor.events import ROUTE_OPERATIONS, AccessEvent, lineage

_times = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
)
_optional_text = st.none() | st.text(max_size=12)


@given(
    when=_times,
    principal=_optional_text,
    environment=_optional_text,
    category=_optional_text,
    status=st.none() | st.sampled_from([200, 204, 401, 403, 404, 500, 503]),
    emergency=st.booleans(),
    operation=st.sampled_from(["secrets.read", "secrets.write", "metadata.list", "odd.route"]),
)
def test_a_packed_response_is_seen_as_its_event(
    when: dt.datetime,
    principal: str | None,
    environment: str | None,
    category: str | None,
    status: int | None,
    emergency: bool,
    operation: str,
) -> None:
    event = AuditEvent(
        kind="response",
        time=when,
        request_id="r-1",
        principal=principal,
        token="t",
        remote="10.0.0.9",
        operation=operation,
        path="medessence/prod/auth/jwt",
        environment=environment,
        category=category,
        status=status,
        emergency=emergency,
    )
    expected = AccessEvent(
        when.timestamp(),
        lineage(principal or ""),
        "10.0.0.9",
        ROUTE_OPERATIONS.get(operation, "other"),
        operation,
        "medessence/prod/auth/jwt",
        environment or None,
        category or None,
        outcome_for(status or 0),
        emergency,
        "r-1",
    )
    assert packed_access_event(pack_event(event)) == expected
    assert access_event(event) == expected
    assert packed_access_event(pack_event(dataclasses.replace(event, kind="request"))) is None


def test_a_naive_time_is_local_time_as_before() -> None:
    naive = dt.datetime(2026, 12, 6, 20, 0, 0, 250_000)
    assert stamp_of(naive) == stamp_of(naive.astimezone(dt.UTC))
    event = AuditEvent(kind="response", time=naive, status=200)
    found = access_event(event)
    assert found is not None and found.ts == naive.timestamp()
