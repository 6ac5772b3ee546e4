"""``audit.packed``: the tuples the broker hands to the lanes say what the objects say."""

from __future__ import annotations

import datetime as dt

from medsecrets.audit.packed import (
    pack_completion,
    pack_event,
    responded,
    stamp,
    stamp_of,
    unpack_completion,
    unpack_event,
)
from medsecrets.audit.record import AuditEvent, Completion

WHEN = dt.datetime(2026, 12, 6, 18, 30, 1, 250_001, tzinfo=dt.UTC)


def _request(version: int | None) -> AuditEvent:
    return AuditEvent(
        kind="request",
        time=WHEN,
        request_id="r-1",
        principal="svc",
        token="accessor-1",
        auth="token",
        remote="10.0.0.7",
        user_agent="sdk/1",
        operation="secrets.read",
        path="medessence/prod/auth/jwt",
        environment="prod",
        category="auth",
        version=version,
        emergency=True,
        data={"field": "body"},
    )


def test_a_packed_response_is_the_packed_form_of_the_response_event() -> None:
    done = Completion(WHEN + dt.timedelta(microseconds=999_999), 200, None, 7)
    for version, completion in ((None, done), (3, done), (3, done._replace(version=None))):
        request = _request(version)
        packed = responded(pack_event(request), pack_completion(completion))
        assert packed == pack_event(request.responded(completion))
        assert unpack_event(packed) == request.responded(completion)
    failed = Completion(WHEN, 503, "audit_failure", None)
    packed = responded(pack_event(_request(2)), pack_completion(failed))
    assert unpack_event(packed).status == 503 and unpack_event(packed).error == "audit_failure"
    assert unpack_event(packed).version == 2 and unpack_event(packed).data is None


def test_times_keep_their_microseconds() -> None:
    assert stamp_of(WHEN) == (int(WHEN.timestamp()), 250_001)
    done = Completion(WHEN, 200, None, None)
    assert unpack_completion(pack_completion(done)) == done
    before = dt.datetime.now(dt.UTC)
    seconds, micro = stamp()
    after = dt.datetime.now(dt.UTC)
    now = dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=micro)
    assert before - dt.timedelta(milliseconds=1) <= now <= after + dt.timedelta(milliseconds=1)
    assert 0 <= micro < 1_000_000
