"""Our audit lines read by position give exactly the event that JSON parsing gives.

``sources._layout_row`` reads a response line that ``render_line`` wrote by cutting it at
``,"`` (time and request id by position, the other fields from a cache keyed by their bytes);
anything else goes to JSON (``_ours_line``). The reference answer everywhere here is
``event_from_record(json.loads(line))``: the standard library's parser, independent of the
fast path and of orjson.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsecrets.audit.record import GENESIS, AuditEvent, Salter, render_line
from medsecrets.monitor import sources
from medsecrets.monitor.analyze import analyze
from medsecrets.monitor.events import ROUTE_OPERATIONS, AccessEvent
from medsecrets.monitor.sources import (
    LogFormatError,
    event_from_record,
    events_of,
    read_batches,
    read_events,
    rows_in_block,
)
from medsecrets.testing.anomalies import generate, write

T0 = dt.datetime(2025, 3, 4, 10, 15, 30, 250000, tzinfo=dt.UTC)
SALTER = Salter(b"s" * 32)
KIND = b'"kind":"'


def line_of(event: AuditEvent, *, seq: int = 7, salter: Salter | None = SALTER) -> bytes:
    line, _ = render_line(event, seq=seq, prev=GENESIS, node="node-1", device="file", salter=salter)
    return line


def response(**fields: object) -> AuditEvent:
    base: dict[str, object] = {
        "kind": "response",
        "time": T0,
        "request_id": "req-1",
        "principal": "svc-billing",
        "token": "tok-billing",
        "auth": "token",
        "remote": "10.30.4.17",
        "user_agent": "medsecrets-sdk/0.1",
        "operation": "secrets.read",
        "path": "medessence/production/database/primary",
        "environment": "production",
        "category": "database",
        "version": 3,
        "status": 200,
        "data": {"value": "v"},
    }
    base.update(fields)
    return AuditEvent(**base)  # type: ignore[arg-type]


def by_json(line: bytes) -> AccessEvent | None:
    """The reference: the standard library's JSON parser, then ``event_from_record``."""
    return event_from_record(json.loads(line))


def by_block(line: bytes) -> list[AccessEvent]:
    """The line as a one-line block of our log (fast path, else JSON)."""
    return events_of(rows_in_block("ours", line, file="audit.log"))


def by_layout(line: bytes) -> AccessEvent | None:
    """The positional reader alone (``None``: the line is not in the record layout)."""
    _, kind, tail = line.partition(KIND)
    assert kind and tail.startswith(b'response"')
    row = sources._layout_row(tail)
    return None if row is None else AccessEvent(row[0], *row[1], row[2])


def escape_free(text: str) -> bool:
    """True when orjson writes ``text`` without a backslash escape."""
    return not any(c in '"\\' or ord(c) < 0x20 for c in text)


def in_layout(line: bytes, request_id: str, principal: str | None) -> bool:
    """True when a rendered line is one the positional reader takes: its request id is
    written without escapes, neither it nor the principal ends with a comma (``,`` and the
    closing quote make a ``,"`` cut), ``,"data":`` occurs once (no member ``data`` in
    data), and the line is ASCII. Every other line is left to JSON."""
    return (
        line.isascii()
        and escape_free(request_id)
        and not request_id.endswith(",")
        and not (principal or "").endswith(",")
        and line.count(b',"data":') == 1
    )


def drop_fraction(line: bytes) -> bytes:
    """The line with its time's fraction removed (``...:30Z``)."""
    edited, count = re.subn(rb'("time":"[^"]*?:\d\d)\.\d+Z"', rb'\1Z"', line, count=1)
    assert count == 1
    return edited


# --- render_line's lines --------------------------------------------------------------------

SPECIAL = (
    "",
    '"',
    "\\",
    '\\"',
    ',"data":',
    '","accessor":"x',
    '"kind":"request"',
    "}",
    "é",
    "用户",
    "🙂",
    "\u2028",
    "\x00",
    "\t\n",
    "C:\\temp\\",
)
TEXT = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=24),
    st.builds(lambda a, b: a + b, st.sampled_from(SPECIAL), st.text(max_size=8)),
)
NAME = st.one_of(st.sampled_from(["svc-billing", "alice", "josé", "运维"]), TEXT)
OPERATION = st.one_of(st.sampled_from([*sorted(ROUTE_OPERATIONS), "sys.health", "x"]), TEXT)
STATUS = st.sampled_from([None, 200, 201, 204, 301, 400, 401, 403, 404, 409, 429, 500, 503])
TIMES = st.datetimes(
    min_value=dt.datetime(1971, 1, 1),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.just(dt.UTC),
)
DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["data", "value", "a", "hash"]) | TEXT, children, max_size=3
        )
    ),
    max_leaves=6,
)


@st.composite
def rendered(draw: st.DrawFn) -> tuple[bytes, AuditEvent]:
    """A response line ``render_line`` wrote, with random fields, and its event."""
    time = draw(TIMES)
    if draw(st.booleans()):
        time = time.replace(microsecond=0)
    request_id = draw(st.one_of(st.uuids().map(str), TEXT, st.just("r" * 300)))
    event = AuditEvent(
        kind="response",
        time=time,
        request_id=request_id,
        principal=draw(st.none() | NAME),
        token=draw(st.none() | st.just("tok")),
        auth=draw(st.none() | st.sampled_from(["token", "oidc", "approle"]) | TEXT),
        remote=draw(st.sampled_from(["10.0.0.1", "2001:db8::1", ""]) | TEXT),
        user_agent=draw(TEXT),
        operation=draw(OPERATION),
        path=draw(st.sampled_from(["medessence/production/database/primary", ""]) | TEXT),
        environment=draw(st.none() | st.just("production") | TEXT),
        category=draw(st.none() | st.just("database") | TEXT),
        version=draw(st.none() | st.integers(0, 2**40)),
        status=draw(STATUS),
        error=draw(st.none() | TEXT),
        emergency=draw(st.booleans()),
        data=draw(DATA),
    )
    salter = SALTER if draw(st.booleans()) else None
    return line_of(event, seq=draw(st.integers(1, 10**12)), salter=salter), event


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered(), st.booleans())
def test_a_rendered_response_line_reads_by_position_as_json_reads_it(
    case: tuple[bytes, AuditEvent], no_fraction: bool
) -> None:
    line, event = case
    if no_fraction:
        line = drop_fraction(line)
    expected = by_json(line)
    assert expected is not None
    assert by_block(line) == [expected]
    assert by_block(line) == [expected]  # again: its fields now come from the cache
    fast = by_layout(line)
    if in_layout(line, event.request_id, event.principal):
        assert fast == expected  # the positional path was taken, and agrees
    else:
        assert fast is None  # left to JSON


def field_variants() -> list[AuditEvent]:
    """Hand-picked variations of every field ``_layout_row`` cuts or caches."""
    variants = [response()]
    for principal in ("josé", "运维-🙂", 'say "hi"', "back\\slash\\", "\\", None, "", "p,", ","):
        variants.append(response(principal=principal))
    for agent in ('ua "quoted"', "C:\\sdk\\", ',"data":1', '","accessor":null,"auth":"x', "é"):
        variants.append(response(user_agent=agent))
    for path in (
        'medessence/production/database/pr"im\\ary',
        "medessence/staging/données/ключ",
        "medessence/production/data",
        "",
    ):
        variants.append(response(path=path))
    variants.append(response(environment=None, category=None))
    variants.append(response(environment="", category=""))
    variants.append(response(environment="staging", category=None))
    variants.extend(response(emergency=flag) for flag in (True, False))
    for status in (None, 200, 204, 400, 401, 403, 404, 409, 500, 503):
        variants.append(response(status=status))
    odd_ids = ("", "r", "r" * 500, "spaces in it", 'q"uote', "back\\", "ид-🙂", "a,b", "a,", ",")
    variants.extend(response(request_id=request_id) for request_id in odd_ids)
    for error in ('bad "thing"', "line\nbreak", None):
        variants.append(response(status=500, error=error))
    variants.append(response(time=T0.replace(microsecond=0)))
    variants.append(response(time=dt.datetime(2025, 3, 4, 12, 0, 0, 1, tzinfo=dt.UTC)))
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    variants.append(response(time=dt.datetime(2025, 3, 4, 23, 59, 59, 999999, tzinfo=tz)))
    variants.append(response(data=None))
    variants.append(response(data={"a": "1", "data": {"data": "2"}}))  # ,"data": inside data
    variants.append(response(data=[{"x": 1, "data": 2}]))
    variants.append(response(data="plain"))
    variants.append(response(operation="metadata.list", path="medessence/production"))
    variants.append(response(operation="tokens.create", path="", principal=None, auth=None))
    variants.append(response(token=None))
    return variants


VARIANTS = field_variants()
OUTCOMES = {"success", "denied", "error", "failure"}


def test_the_hand_picked_variants_cover_every_outcome_and_both_emergencies() -> None:
    events = [by_json(line_of(v)) for v in VARIANTS]
    assert {e.outcome for e in events if e is not None} == OUTCOMES
    assert {e.emergency for e in events if e is not None} == {True, False}
    assert any(e is not None and e.category is None for e in events)


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("salted", [True, False])
def test_each_field_variant_reads_the_same_by_position_and_by_json(
    variant: int, salted: bool
) -> None:
    event = VARIANTS[variant]
    for line in (line_of(event, salter=SALTER if salted else None), drop_fraction(line_of(event))):
        expected = by_json(line)
        assert expected is not None
        assert by_block(line) == [expected]
        if in_layout(line, event.request_id, event.principal):
            assert by_layout(line) == expected
        else:
            assert by_layout(line) is None


def test_a_request_line_and_other_records_give_no_event() -> None:
    request = response(kind="request", status=None)
    checkpoint = AuditEvent(kind="checkpoint", time=T0, extra={"covers": 3, "signature": "x"})
    alert = AuditEvent(kind="alert", time=T0, extra={"alert": {"detector": "rate"}})
    for event in (request, checkpoint, alert):
        line = line_of(event)
        assert by_json(line) is None
        assert by_block(line) == []


def test_a_whole_synthetic_log_reads_as_json_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, labels = generate(5, normal=600, per_kind=3)
    (path,) = write(tmp_path, "ours", records, labels)
    lines = path.read_bytes().splitlines(keepends=True)
    expected = [e for e in map(by_json, lines) if e is not None]
    assert len(expected) == len(records)
    assert all(by_layout(line) is not None for line in lines if b'"kind":"response"' in line)

    assert list(read_events(path)) == expected  # one 4 MiB block
    monkeypatch.setattr(sources, "BLOCK_BYTES", 3000)  # blocks of a few lines
    assert list(read_events(path, "ours")) == expected
    batches = list(read_batches(path, "ours"))
    assert len(batches) > 50
    assert [e for batch in batches for e in batch] == expected


# --- hand-edited lines: not in the record layout, so JSON decides --------------------------


def record() -> dict[str, object]:
    found = json.loads(line_of(response(user_agent="ua")))
    assert isinstance(found, dict)
    return found


def dumps(value: object, **options: object) -> bytes:
    options.setdefault("separators", (",", ":"))
    options.setdefault("ensure_ascii", False)
    return json.dumps(value, **options).encode() + b"\n"  # type: ignore[arg-type]


def reordered(first: str, second: str) -> bytes:
    items = list(record().items())
    keys = [k for k, _ in items]
    i, j = keys.index(first), keys.index(second)
    items[i], items[j] = items[j], items[i]
    return dumps(dict(items))


def without(key: str) -> bytes:
    found = record()
    del found[key]
    return dumps(found)


def with_member(after: str, key: str, value: object) -> bytes:
    found: dict[str, object] = {}
    for k, v in record().items():
        found[k] = v
        if k == after:
            found[key] = value
    return dumps(found)


def moved_to_end(key: str) -> bytes:
    found = record()
    found[key] = found.pop(key)
    return dumps(found)


def replaced(key: str, value: object) -> bytes:
    found = record()
    found[key] = value
    return dumps(found)


def kind_last() -> bytes:
    found = record()
    kind = found.pop("kind")
    found["kind"] = kind
    return dumps(found)


def raw_edit(old: bytes, new: bytes) -> bytes:
    line = line_of(response(user_agent="ua"))
    assert line.count(old) == 1
    return line.replace(old, new)


HAND_EDITED: dict[str, Callable[[], bytes]] = {
    "remote and user_agent swapped": lambda: reordered("remote", "user_agent"),
    "time and request_id swapped": lambda: reordered("time", "request_id"),
    "principal and accessor swapped": lambda: reordered("principal", "accessor"),
    "kind last": kind_last,
    "spaces everywhere": lambda: dumps(record(), separators=(", ", ": ")),
    "indented": lambda: dumps(record(), indent=1).replace(b"\n", b" ").rstrip() + b"\n",
    "one space after a comma": lambda: raw_edit(b',"principal"', b', "principal"'),
    "space before the time": lambda: raw_edit(b'"time":"', b'"time": "'),
    "leading blanks": lambda: b" \t " + line_of(response(user_agent="ua")),
    "CRLF": lambda: line_of(response(user_agent="ua")).replace(b"\n", b"\r\n"),
    "no accessor": lambda: without("accessor"),
    "no node": lambda: without("node"),
    "no request_id": lambda: without("request_id"),
    "no kind": lambda: without("kind"),
    "no outcome": lambda: without("outcome"),
    "no data": lambda: without("data"),
    "outcome moved to the end": lambda: moved_to_end("outcome"),
    "path moved to the end": lambda: moved_to_end("path"),
    "emergency moved to the end": lambda: moved_to_end("emergency"),
    "an extra member mid-record": lambda: with_member("device", "note", "x"),
    "an extra member before data": lambda: with_member("emergency", "note", 1),
    "an extra member after the hash": lambda: with_member("hash", "note", 1),
    '"data" inside a string value': lambda: replaced("user_agent", 'x","data":{"y'),
    '"data" inside the error': lambda: replaced("error", ',"data":null,"hash":"'),
    '"data" inside auth': lambda: replaced("auth", {"method": "oidc", "data": 1}),
    '"data" inside data': lambda: replaced("data", {"a": 1, "data": {"data": 2}}),
    "emergency as text": lambda: replaced("emergency", "true"),
    "outcome not a word": lambda: replaced("outcome", "maybe"),
    "principal a number": lambda: replaced("principal", 42),
    "time with an offset": lambda: replaced("time", "2025-03-04T12:15:30.25+02:00"),
    "time without a zone": lambda: replaced("time", "2025-03-04T10:15:30"),
    "time with nanoseconds": lambda: replaced("time", "2025-03-04T10:15:30.123456789Z"),
    "request id as escapes": lambda: raw_edit(b'"request_id":"req-1"', rb'"request_id":"\u0072eq"'),
    "principal as escapes": lambda: raw_edit(
        b'"principal":"svc-billing"', rb'"principal":"\u00e9"'
    ),
    "time as escapes": lambda: raw_edit(b'"time":"2025', rb'"time":"\u0032025'),
}


@pytest.mark.parametrize("edit", list(HAND_EDITED))
def test_a_hand_edited_line_reads_as_json_reads_it(edit: str) -> None:
    line = HAND_EDITED[edit]()
    expected = by_json(line)
    assert by_block(line) == ([] if expected is None else [expected])
    # and after the unedited line has put its fields in the cache
    by_block(line_of(response(user_agent="ua")))
    assert by_block(line) == ([] if expected is None else [expected])


def test_hand_edited_lines_among_rendered_ones_read_as_json_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = line_of(response(user_agent="ua"))
    lines = []
    for edit in HAND_EDITED.values():
        lines += [plain, edit(), plain]
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(lines))
    expected = [e for e in map(by_json, lines) if e is not None]
    assert list(read_events(path, "ours")) == expected
    monkeypatch.setattr(sources, "BLOCK_BYTES", 1024)
    assert list(read_events(path, "ours")) == expected


def test_a_response_whose_kind_straddles_byte_160_is_read() -> None:
    rest = record()
    head = {"prev": rest.pop("prev"), "seq": rest.pop("seq")}
    kind = rest.pop("kind")
    for pad in range(200):
        line = dumps({**head, "pad": "n" * pad, "kind": kind, **rest})
        start = line.index(KIND)
        if start + len(KIND) <= 160 < start + len(b'"kind":"response"'):
            break
    else:
        raise AssertionError("no padding puts kind across byte 160")
    expected = by_json(line)
    assert expected is not None
    assert by_block(line) == [expected]


# --- malformed lines: LogFormatError naming the file and line ------------------------------


def bad_time_line() -> bytes:
    return line_of(response(user_agent="ua")).replace(b'"time":"2025-03-04', b'"time":"2025-02-30')


MALFORMED: dict[str, Callable[[], bytes]] = {
    "not JSON": lambda: b"this is not an audit record\n",
    "a JSON array": lambda: b'[1, "kind", 3]\n',
    "a JSON string": lambda: b'"kind":"response"\n',
    "cut before data": lambda: line_of(response())[:260] + b"\n",
    "an unquoted path": lambda: raw_edit(b'"path":"medessence', b'"path":medessence'),
    "a bad time (read by position)": bad_time_line,
    "a bad time (read as JSON)": lambda: replaced("time", "yesterday"),
    "no time": lambda: without("time"),
    "invalid UTF-8 in the principal": lambda: raw_edit(b'"svc-billing"', b'"svc-\xffbilling"'),
    "invalid UTF-8 in the request id": lambda: raw_edit(b'"req-1"', b'"req-\xff"'),
}


def json_refuses(line: bytes) -> bool:
    """True when the reference refuses ``line`` (not a JSON object, or no event time)."""
    try:
        found = json.loads(line)
    except ValueError:
        return True
    if not isinstance(found, dict):
        return True
    try:
        event_from_record(found)
    except LogFormatError:
        return True
    return False


def log_with(tmp_path: Path, bad: bytes, *, before: int, after: int = 20) -> Path:
    """A log of ``before`` good lines, ``bad``, then ``after`` good lines."""
    good = [line_of(response(request_id=f"r{n}"), seq=n + 1) for n in range(before + after)]
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(good[:before]) + bad + b"".join(good[before:]))
    return path


@pytest.mark.parametrize("problem", list(MALFORMED))
def test_a_malformed_line_is_refused_with_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    bad = MALFORMED[problem]()
    assert json_refuses(bad)
    path = log_with(tmp_path, bad, before=40)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 4096)  # the bad line is in a later block
    for read in (
        lambda: list(read_events(path)),
        lambda: list(read_events(path, "ours")),
        lambda: analyze(path, workers=0),
        lambda: analyze([path], "ours", workers=0),
    ):
        with pytest.raises(LogFormatError) as caught:
            read()
        assert caught.value.file == str(path)
        assert caught.value.line == 41
        assert str(caught.value).startswith(f"{path}:41: ")


def test_a_bad_time_is_named_the_same_by_position_and_as_json() -> None:
    line = bad_time_line()
    with pytest.raises(LogFormatError) as by_position:
        sources._layout_row(line.partition(KIND)[2])
    with pytest.raises(LogFormatError) as as_json:
        by_json(line)
    assert by_position.value.problem == as_json.value.problem == "bad time"


def truncated_after_data() -> bytes:
    line = line_of(response())
    return line[: line.index(b',"hash":"') + 12] + b"\n"


@pytest.mark.parametrize(
    "bad",
    [
        truncated_after_data,
        lambda: line_of(response()).replace(b'"}\n', b"\n"),  # the closing quote and brace lost
        lambda: line_of(response()).replace(b'"node":"node-1"', b'"node":"node-\xff"'),
    ],
    ids=["cut in the hash", "no closing brace", "invalid UTF-8 in the node"],
)
def test_a_response_line_damaged_after_its_data_is_refused(
    tmp_path: Path, bad: Callable[[], bytes]
) -> None:
    line = bad()
    with pytest.raises(ValueError):  # not JSON
        json.loads(line)
    path = log_with(tmp_path, line, before=5)
    with pytest.raises(LogFormatError) as caught:
        list(read_events(path))
    assert caught.value.line == 6


@pytest.mark.parametrize(
    ("key", "value"),
    [("principal", "mallory"), ("outcome", "denied"), ("time", "2030-01-01T00:00:00Z")],
)
def test_a_member_repeated_after_data_reads_as_json_reads_it(key: str, value: str) -> None:
    line = raw_edit(b',"hash":"', f',"{key}":"{value}","hash":"'.encode())
    expected = by_json(line)
    assert expected is not None
    assert by_block(line) == [expected]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"kind":"response",', b'"kind":"response"[,'),  # damage right after the kind
        (b'"request_id":"req-1"', b'"request_id":"'),  # the request id's value cut away
        (b'"node":"node-1"', b'"kind":"request"'),  # a member the reader does not read
        (b'"device":"file"', b'"device":7'),
        (b'"time":"', b'"time":"'[:-1]),  # the time's opening quote lost
    ],
)
def test_damage_in_the_members_the_reader_cuts_goes_to_json(old: bytes, new: bytes) -> None:
    line = line_of(response())
    assert old in line
    assert by_layout(line.replace(old, new, 1)) is None  # JSON decides (and names the problem)
