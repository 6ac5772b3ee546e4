"""``render_exchange``: a read's two records, byte for byte what two ``render_line`` calls give.

The lane renders every exchange (a request and its response) with ``render_exchange``,
which renders their shared fields once; ``audit verify`` and every reader rely on the
layout ``render_line`` defines, so the two must never differ: random events (odd text,
``None``s, bodies, served versions, sealed), compared with ``render_line`` of the request
and of ``request.responded(completion)``, lines and hashes. The audit process renders the
packed tuples instead (``packed.render_exchange``): the same bytes again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from medsecrets.audit import packed
from medsecrets.audit.packed import pack_completion, pack_event, stamp_of, unpack_completion
from medsecrets.audit.record import (
    GENESIS,
    LARGE_DATA,
    AuditEvent,
    Completion,
    Salter,
    format_stamp,
    format_time,
    refused,
    render_exchange,
    render_line,
)

_SALTER = Salter(b"k" * 32)
_YEAR_ONE = -62_135_596_800
"""0001-01-01T00:00:00Z in POSIX seconds: the earliest time a ``datetime`` holds."""

_text = st.text(max_size=24)
_optional_text = st.none() | _text
_version = st.none() | st.integers(min_value=0, max_value=2**63 - 1)
_times = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.just(dt.UTC)
)
_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text
_data = st.none() | st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def _requests(draw: st.DrawFn) -> AuditEvent:
    return AuditEvent(
        kind="request",
        time=draw(_times),
        request_id=draw(_text),
        principal=draw(_optional_text),
        token=draw(_optional_text),
        auth=draw(st.sampled_from([None, "token"])),
        remote=draw(_text),
        user_agent=draw(_text),
        operation=draw(st.sampled_from(["secrets.read", "metadata.list", "sys.health"])),
        path=draw(_text),
        environment=draw(_optional_text),
        category=draw(_optional_text),
        version=draw(_version),
        emergency=draw(st.booleans()),
        data=draw(_data),
    )


_completions = st.builds(
    Completion,
    time=_times,
    status=st.sampled_from([200, 204, 400, 401, 403, 404, 409, 500, 503]),
    error=_optional_text,
    version=_version,
)


def _exchanges(test: Callable[..., None]) -> Callable[..., None]:
    """``test`` over random exchanges: a request, its completion, a place in the chain,
    sealed or not."""
    return settings(max_examples=400, deadline=None)(
        given(
            request=_requests(),
            completion=_completions,
            seq=st.integers(min_value=1, max_value=2**62),
            sealed=st.booleans(),
        )(test)
    )


def _two_lines(
    request: AuditEvent, completion: Completion, seq: int, salter: Salter | None
) -> tuple[bytes, str, bytes, str]:
    first, first_hash = render_line(
        request, seq=seq, prev=GENESIS, node="node-1", device="file", salter=salter
    )
    second, second_hash = render_line(
        request.responded(completion),
        seq=seq + 1,
        prev=first_hash,
        node="node-1",
        device="file",
        salter=salter,
    )
    return first, first_hash, second, second_hash


@_exchanges
def test_an_exchange_renders_as_its_two_records(
    request: AuditEvent, completion: Completion, seq: int, sealed: bool
) -> None:
    salter = None if sealed else _SALTER
    found = render_exchange(
        request, completion, seq=seq, prev=GENESIS, node="node-1", device="file", salter=salter
    )
    assert found == _two_lines(request, completion, seq, salter)


def test_a_large_body_and_a_served_version_render_alike() -> None:
    now = dt.datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=dt.UTC)
    request = AuditEvent(
        kind="request",
        time=now,
        request_id="r-1",
        principal="svc",
        token="ms.secret-token",
        auth="token",
        operation="secrets.read",
        path="medessence/prod/database/main",
        version=3,
        data={"fields": {f"k{i}": "v" for i in range(100)}},
    )
    completion = Completion(now + dt.timedelta(microseconds=5), 200, None, 4)
    found = render_exchange(
        request, completion, seq=7, prev=GENESIS, node="node-1", device="file", salter=_SALTER
    )
    assert found == _two_lines(request, completion, 7, _SALTER)
    assert LARGE_DATA.encode() in found[0]
    assert b'"version":4' in found[2] and b'"version":3' in found[0]
    assert b"ms.secret-token" not in found[0] + found[2]


@_exchanges
def test_a_packed_exchange_renders_as_the_objects_do(
    request: AuditEvent, completion: Completion, seq: int, sealed: bool
) -> None:
    """The audit process renders from the tuples (``packed.render_exchange``): the same
    bytes and hashes as ``render_exchange`` of the objects, a refused answer too."""
    salter = None if sealed else _SALTER
    found = packed.render_exchange(
        pack_event(request),
        pack_completion(completion),
        seq=seq,
        prev=GENESIS,
        node="node-1",
        device="file",
        salter=salter,
    )
    assert found == _two_lines(request, completion, seq, salter)
    refusal = packed.refused(pack_completion(completion))
    assert refusal == pack_completion(refused(completion))


@given(when=_times)
def test_a_stamp_formats_as_its_time(when: dt.datetime) -> None:
    assert format_stamp(*stamp_of(when)) == format_time(when)
    seconds, micro = stamp_of(when)
    if seconds > _YEAR_ONE:  # a microsecond count over a second carries, as timedelta's
        assert format_stamp(seconds - 1, micro + 1_000_000) == format_time(when)
    assert unpack_completion(pack_completion(Completion(when, 200, None, None))).time == when
