"""Our audit lines decoded by msgspec give exactly the event that JSON parsing gives.

``sources._decoded_row`` decodes a response line into ``_Response`` (the members an event
reads, typed as ``render_line`` writes them; the rest skipped), and leaves any other line
(``None``) to the JSON path, ``_ours_line``. The reference answer for the lines we write and
for hand-edited ones is ``event_from_record(json.loads(line))``: the standard library's
parser, independent of the fast path and of orjson. Where msgspec and JSON differ (what
msgspec does not check in a member it skips, nesting, types, repeated members, NaN, blanks
before the object...), the reference is the JSON path itself: ``rows_in_block`` must give
what ``_ours_line`` alone gives, line by line (``json_path``), events or the same
``LogFormatError``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
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


def by_decoder(line: bytes) -> AccessEvent | None:
    """The msgspec fast path alone (``None``: the line is left to ``_ours_line``)."""
    row = sources._decoded_row(line)
    return None if row is None else AccessEvent(row[0], *row[1], row[2])


def decoder_takes(line: bytes) -> bool:
    """True for a response line that ``render_line`` wrote and the decoder must take: every
    ASCII one (orjson writes characters beyond ASCII unescaped; the data of these tests holds
    far fewer than ``_FAST_BRACKETS`` brackets). Every other line is left to JSON."""
    return line.isascii()


Outcome = tuple[str, object]


def json_path(block: bytes) -> Outcome:
    """What the JSON path alone (``_ours_line``, line by line as ``rows_in_block`` cuts them)
    makes of ``block``: ``("read", events)``, ``("refused", (problem, line number))``, or
    ``("raised", exception type)`` for anything else it raises."""
    rows = []
    for number, line in enumerate(io.BytesIO(block).readlines(), 1):
        try:
            row = sources._ours_line(line.rstrip(b"\n"))
        except LogFormatError as exc:
            return "refused", (exc.problem, number)
        except Exception as exc:
            return "raised", type(exc)
        if row is not None:
            rows.append(row)
    return "read", events_of(rows)


def through_block(block: bytes) -> Outcome:
    """What ``rows_in_block`` (the decoder, else ``_ours_line``) makes of ``block``, in
    ``json_path``'s terms."""
    try:
        return "read", events_of(rows_in_block("ours", block, file="audit.log"))
    except LogFormatError as exc:
        return "refused", (exc.problem, exc.line)
    except Exception as exc:
        return "raised", type(exc)


def assert_as_json_path(block: bytes) -> Outcome:
    """Assert ``rows_in_block`` gives ``block`` what the JSON path gives it, with its
    fields' cache cold and then warm; returns that outcome."""
    expected = json_path(block)
    sources._FIELDS.clear()
    assert through_block(block) == expected
    assert through_block(block) == expected  # the fields now from the cache
    return expected


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
def test_a_rendered_response_line_decodes_as_json_reads_it(
    case: tuple[bytes, AuditEvent], no_fraction: bool
) -> None:
    line, _ = case
    if no_fraction:
        line = drop_fraction(line)
    expected = by_json(line)
    assert expected is not None
    assert by_block(line) == [expected]
    assert by_block(line) == [expected]  # again: its fields now come from the cache
    fast = by_decoder(line)
    if decoder_takes(line):
        assert fast == expected  # the decoder took it, and agrees
    else:
        assert fast is None  # left to JSON


def field_variants() -> list[AuditEvent]:
    """Hand-picked variations of every field ``_decoded_row`` decodes, caches or skips."""
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
def test_each_field_variant_reads_the_same_decoded_and_by_json(variant: int, salted: bool) -> None:
    event = VARIANTS[variant]
    for line in (line_of(event, salter=SALTER if salted else None), drop_fraction(line_of(event))):
        expected = by_json(line)
        assert expected is not None
        assert by_block(line) == [expected]
        assert by_decoder(line) == (expected if decoder_takes(line) else None)


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
    responses = [line for line in lines if b'"kind":"response"' in line]
    assert len(responses) == len(records) and all(map(decoder_takes, responses))
    assert all(by_decoder(line) is not None for line in responses)

    assert list(read_events(path)) == expected  # one 4 MiB block
    monkeypatch.setattr(sources, "BLOCK_BYTES", 3000)  # blocks of a few lines
    assert list(read_events(path, "ours")) == expected
    batches = list(read_batches(path, "ours"))
    assert len(batches) > 50
    assert [e for batch in batches for e in batch] == expected


# --- hand-edited lines ---------------------------------------------------------------------


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
    "a bad time (decoded)": bad_time_line,
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


def test_a_bad_time_is_named_the_same_decoded_and_as_json() -> None:
    line = bad_time_line()
    with pytest.raises(LogFormatError) as decoded:
        sources._decoded_row(line)
    with pytest.raises(LogFormatError) as as_json:
        by_json(line)
    assert decoded.value.problem == as_json.value.problem == "bad time"


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


# --- where msgspec and JSON differ: the decoder must leave those lines to the JSON path ------


def edited(replace: dict[str, bytes], *, drop: tuple[str, ...] = ()) -> bytes:
    """The plain response line (``record()``, ASCII) with members' values replaced by raw
    JSON text (``replace``) and members left out (``drop``), in ``render_line``'s order."""
    parts = [
        json.dumps(key).encode()
        + b":"
        + replace.get(key, json.dumps(value, separators=(",", ":")).encode())
        for key, value in record().items()
        if key not in drop
    ]
    return b"{" + b",".join(parts) + b"}\n"


def before_data(*members: bytes) -> bytes:
    """The plain response line with ``members`` (raw ``"key":value`` text) before ``data``."""
    return raw_edit(b',"data":', b"," + b",".join(members) + b',"data":')


def stdlib(line: bytes) -> Outcome:
    """``by_json``'s answer in ``json_path``'s terms (a line it cannot parse is refused as
    ``_ours_line`` words it)."""
    try:
        found = json.loads(line)
    except ValueError:
        return "refused", ("not a JSON audit record", 1)
    try:
        event = event_from_record(found)
    except LogFormatError as exc:
        return "refused", (exc.problem, 1)
    return "read", [] if event is None else [event]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"user_agent":"ua"', b'"user_agent":"u\xffa"'),
        (b'"user_agent":"ua"', b'"user_agent":"u\xc3"'),  # a cut two-byte character
        (b'"auth":"token"', b'"auth":"tok\x80en"'),
        (b'"data":{"value":"', b'"data":{"value":"\xc0\xaf'),  # an overlong "/"
        (b'"data":{"value":"', b'"data":{"\xff":1,"value":"'),  # in a key
    ],
    ids=["user_agent", "user_agent cut", "auth", "data overlong", "data key"],
)
def test_invalid_utf8_in_a_member_the_decoder_skips_is_refused_as_json_refuses_it(
    old: bytes, new: bytes
) -> None:
    # msgspec does not check the UTF-8 of a string it skips: only ASCII lines are decoded
    line = raw_edit(old, new)
    assert json_refuses(line)
    assert assert_as_json_path(line) == ("refused", ("not a JSON audit record", 1))


@pytest.fixture
def recursion_limit() -> Iterator[Callable[[int], None]]:
    """``sys.setrecursionlimit`` for one test; the limit is restored after it."""
    before = sys.getrecursionlimit()
    try:
        yield sys.setrecursionlimit
    finally:
        sys.setrecursionlimit(before)


def nested(levels: int) -> bytes:
    """The plain response line with arrays nested ``levels`` deep as its data (the record is
    one level deeper)."""
    return edited({"data": b"[" * levels + b"]" * levels})


def test_data_nested_beyond_orjson_is_refused_when_the_recursion_limit_is_raised(
    recursion_limit: Callable[[int], None],
) -> None:
    recursion_limit(5000)  # msgspec's depth limit follows it: it reads 1,031 levels now
    line = nested(1030)  # orjson reads 1,024 levels, the standard library here 512
    assert by_decoder(line) is None  # its brackets are counted
    assert assert_as_json_path(line) == ("refused", ("not a JSON audit record", 1))


@pytest.mark.parametrize("levels", [1000, 1030])
def test_data_nested_too_deep_for_msgspec_at_the_default_limit_reads_as_json(
    recursion_limit: Callable[[int], None], levels: int
) -> None:
    recursion_limit(1000)  # Python's default: the brackets are not counted
    line = nested(levels)
    with pytest.raises(RecursionError):
        sources._decode_response(line)
    assert by_decoder(line) is None
    outcome = assert_as_json_path(line)
    if levels < 1024:  # orjson reads it: the event of the same record with other data
        assert outcome == ("read", [by_json(nested(1))])
    else:
        assert outcome == ("refused", ("not a JSON audit record", 1))


BIG_STATUS = {"status 2**64": b"18446744073709551616", "status 10**30": b"1" + b"0" * 30}
"""Statuses that orjson reads as a float (an integer beyond 64 bits that a double holds):
the JSON path then takes the outcome as ``success``, where the standard library (an
integer) says ``failure``. The decoder must read them as the JSON path does."""

TYPED: dict[str, tuple[dict[str, bytes], tuple[str, ...]]] = {
    "emergency 1": ({"emergency": b"1"}, ()),
    "emergency 0": ({"emergency": b"0"}, ()),
    "emergency as text": ({"emergency": b'"true"'}, ()),
    "emergency null": ({"emergency": b"null"}, ()),
    "emergency a list": ({"emergency": b"[true]"}, ()),
    "status 403.0": ({"status": b"403.0"}, ("outcome",)),
    "status 4e2": ({"status": b"4e2"}, ("outcome",)),
    "status true": ({"status": b"true"}, ("outcome",)),
    "status as text": ({"status": b'"403"'}, ("outcome",)),
    "status a list": ({"status": b"[403]"}, ("outcome",)),
    "status an object": ({"status": b'{"code":403}'}, ("outcome",)),
    "status null": ({"status": b"null"}, ("outcome",)),
    "status -0": ({"status": b"-0"}, ("outcome",)),
    "status 403": ({"status": b"403"}, ("outcome",)),
    "status 2**63": ({"status": b"9223372036854775808"}, ("outcome",)),
    "status -2**63": ({"status": b"-9223372036854775808"}, ("outcome",)),
    "status 10**400": ({"status": b"1" + b"0" * 400}, ("outcome",)),
    **{name: ({"status": value}, ("outcome",)) for name, value in BIG_STATUS.items()},
    "principal 5": ({"principal": b"5"}, ()),
    "principal a list": ({"principal": b'["svc-billing"]'}, ()),
    "principal an object": ({"principal": b'{"name":"svc-billing"}'}, ()),
    "principal true": ({"principal": b"true"}, ()),
    "principal null": ({"principal": b"null"}, ()),
    "time 123": ({"time": b"123"}, ()),
    "time 1.5": ({"time": b"1.5"}, ()),
    "time null": ({"time": b"null"}, ()),
    "time a list": ({"time": b'["2025-03-04T10:15:30Z"]'}, ()),
    "time an object": ({"time": b"{}"}, ()),
    "no time": ({}, ("time",)),
    "request_id 5": ({"request_id": b"5"}, ()),
    "request_id null": ({"request_id": b"null"}, ()),
    "request_id a list": ({"request_id": b"[]"}, ()),
    "remote 1": ({"remote": b"1"}, ()),
    "operation a list": ({"operation": b'["secrets.read"]'}, ()),
    "path an object": ({"path": b"{}"}, ()),
    "environment false": ({"environment": b"false"}, ()),
    "category 2": ({"category": b"2"}, ()),
    "outcome 1": ({"outcome": b"1"}, ()),
    "outcome null": ({"outcome": b"null"}, ()),
    "outcome true": ({"outcome": b"true"}, ()),
    # unhashable: the JSON path looked them up in a dict and crashed (TypeError, a traceback)
    "outcome a list": ({"outcome": b'["denied"]'}, ()),
    "outcome an object": ({"outcome": b'{"denied":true}'}, ()),
}


@pytest.mark.parametrize("case", list(TYPED))
def test_a_member_of_another_type_reads_as_json_reads_it(case: str) -> None:
    replace, drop = TYPED[case]
    line = edited(replace, drop=drop)
    outcome = assert_as_json_path(line)
    if case not in BIG_STATUS:
        assert outcome == stdlib(line)


@pytest.mark.parametrize("case", list(BIG_STATUS))
def test_a_status_beyond_64_bits_reads_as_the_json_path_reads_it(case: str) -> None:
    line = edited({"status": BIG_STATUS[case]}, drop=("outcome",))
    read = assert_as_json_path(line)
    assert read == ("read", [by_decoder(edited({"status": b"200"}, drop=("outcome",)))])
    assert stdlib(line) == ("read", [by_decoder(edited({"status": b"503"}, drop=("outcome",)))])


REPEATED: dict[str, Callable[[], bytes]] = {
    "principal twice": lambda: before_data(b'"principal":"mallory"'),
    "principal twice, a number last": lambda: before_data(b'"principal":5'),
    "principal twice, a number first": lambda: edited(
        {"principal": b"5", "error": b'null,"principal":"mallory"'}
    ),
    "kind twice: response, then request": lambda: before_data(b'"kind":"request"'),
    "kind twice: response, then checkpoint": lambda: before_data(b'"kind":"checkpoint"'),
    "kind twice: response, then null": lambda: before_data(b'"kind":null'),
    "kind twice: response, then 1": lambda: before_data(b'"kind":1'),
    "kind twice: response, then response as escapes": lambda: before_data(
        rb'"kind":"\u0072esponse"'
    ),
    "kind twice: the second's key as escapes": lambda: before_data(rb'"\u006bind":"request"'),
    "emergency twice: false, then true": lambda: before_data(b'"emergency":true'),
    "emergency twice: true, then false": lambda: edited({"emergency": b'true,"emergency":false'}),
    "outcome twice": lambda: before_data(b'"outcome":"denied"'),
    "status twice, no outcome": lambda: edited({"status": b'200,"status":403'}, drop=("outcome",)),
    "time twice: the second bad": lambda: before_data(b'"time":"yesterday"'),
    "time twice: the first bad": lambda: edited(
        {"time": b'"yesterday","time":"2025-03-04T10:15:30Z"'}
    ),
    "time twice: the second null": lambda: before_data(b'"time":null'),
    "request_id twice": lambda: before_data(b'"request_id":"req-2"'),
    "principal with its key as escapes": lambda: before_data(rb'"\u0070rincipal":"mallory"'),
}


@pytest.mark.parametrize("case", list(REPEATED))
def test_a_member_repeated_before_data_reads_as_json_reads_it(case: str) -> None:
    line = REPEATED[case]()
    assert assert_as_json_path(line) == stdlib(line)


NO_KIND = b'{"data":{"kind":"response"},"time":"2025-03-04T10:15:30Z","principal":"x"'


@pytest.mark.parametrize(
    ("line", "read"),
    [(NO_KIND + b"}\n", False), (NO_KIND + b',"seq":1,"hash":"h"}\n', True)],
    ids=["not one of our records", "a response without kind"],
)
def test_a_kind_only_inside_data_reads_as_json_reads_it(line: bytes, read: bool) -> None:
    outcome = assert_as_json_path(line)
    assert outcome[0] == ("read" if read else "refused")


ODD: dict[str, Callable[[], bytes]] = {
    "a lone surrogate in the principal": lambda: edited({"principal": rb'"\ud800"'}),
    "a lone low surrogate in the principal": lambda: edited({"principal": rb'"\udc00x"'}),
    "a lone surrogate in the user agent": lambda: edited({"user_agent": rb'"ua\ud83d"'}),
    "a lone surrogate in data": lambda: edited({"data": rb'{"v":"\udfff"}'}),
    "a lone surrogate in the time": lambda: edited({"time": rb'"2025-03-04T10:15:30Z\ud800"'}),
    "a surrogate pair in the principal": lambda: edited({"principal": rb'"\ud83d\ude42"'}),
    "NaN in data": lambda: edited({"data": b'{"v":NaN}'}),
    "Infinity in data": lambda: edited({"data": b"Infinity"}),
    "-Infinity in data": lambda: edited({"data": b"[-Infinity]"}),
    "2**64 in data": lambda: edited({"data": b"18446744073709551616"}),
    "-2**63-1 in data": lambda: edited({"data": b"-9223372036854775809"}),
    "10**400 in data": lambda: edited({"data": b"1" + b"0" * 400}),
    "1e400 in data": lambda: edited({"data": b"1e400"}),
    "a long fraction in data": lambda: edited({"data": b"0." + b"9" * 400}),
    "text after the object": lambda: line_of(response()).replace(b"}\n", b"}x\n"),
    "an object after the object": lambda: line_of(response()).replace(b"}\n", b"}{}\n"),
    "a number after the object": lambda: line_of(response()).replace(b"}\n", b"} 1\n"),
    "NUL after the object": lambda: line_of(response()).replace(b"}\n", b"}\x00\n"),
    "blanks after the object": lambda: line_of(response()).replace(b"}\n", b"} \t\r\n"),
    "a space before the object": lambda: b" " + line_of(response()),
    "blanks before the object": lambda: b" \t " + line_of(response()),
    "CR before the object": lambda: b"\r" + line_of(response()),
    "a raw control character in the user agent": lambda: edited({"user_agent": b'"u\x01a"'}),
    "a raw tab in the principal": lambda: edited({"principal": b'"svc\tbilling"'}),
    "a raw DEL in the principal": lambda: edited({"principal": b'"svc\x7fbilling"'}),
    "a bad escape in the user agent": lambda: edited({"user_agent": rb'"u\xa"'}),
    "a short unicode escape in data": lambda: edited({"data": rb'"\u12"'}),
    "a form feed between members": lambda: raw_edit(b',"remote"', b',\x0c"remote"'),
    "a vertical tab between members": lambda: raw_edit(b',"remote"', b',\x0b"remote"'),
    "a leading zero in data": lambda: edited({"data": b"01"}),
    "a bare fraction in data": lambda: edited({"data": b".5"}),
    "a plus sign in data": lambda: edited({"data": b"+1"}),
    "hex in data": lambda: edited({"data": b"0x10"}),
    "a cut exponent in data": lambda: edited({"data": b"1e+"}),
    "a trailing comma in data": lambda: edited({"data": b'{"a":1,}'}),
    "a trailing comma in the record": lambda: line_of(response()).replace(b"}\n", b",}\n"),
    "True in data": lambda: edited({"data": b"True"}),
    "tru in data": lambda: edited({"data": b"tru"}),
    "single quotes in data": lambda: edited({"data": b"'v'"}),
    "a number as a key in data": lambda: edited({"data": b"{1:2}"}),
    "damage right after the kind": lambda: raw_edit(b'"kind":"response",', b'"kind":"response"[,'),
    "the request id's value cut away": lambda: raw_edit(b'"request_id":"req-1"', b'"request_id":"'),
    "a member that is not read of another type": lambda: raw_edit(
        b'"device":"file"', b'"device":7'
    ),
    "the time's opening quote lost": lambda: raw_edit(b'"time":"', b'"time":'),
}
STDLIB_DIFFERS = {
    "text after the object",  # raw_decode, the JSON path's fallback, ignores it
    "an object after the object",
    "a number after the object",
    "NUL after the object",
    "a space before the object",  # json.loads skips blanks before the object, raw_decode not
    "blanks before the object",
    "CR before the object",
}


@pytest.mark.parametrize("case", list(ODD))
def test_a_line_msgspec_reads_otherwise_reads_as_the_json_path_reads_it(case: str) -> None:
    line = ODD[case]()
    outcome = assert_as_json_path(line)
    if case not in STDLIB_DIFFERS:
        assert outcome == stdlib(line)


def test_the_fields_cache_tells_true_from_1() -> None:
    true, one = edited({"emergency": b"true"}), edited({"emergency": b"1"})
    flagged, plain = by_json(true), by_json(one)
    assert flagged is not None and flagged.emergency
    assert plain is not None and not plain.emergency  # JSON: only true is an emergency
    assert assert_as_json_path(true + one) == ("read", [flagged, plain])
    assert assert_as_json_path(one + true) == ("read", [plain, flagged])
    status = edited({"status": b"true"}, drop=("outcome",))
    assert assert_as_json_path(edited({"status": b"1"}, drop=("outcome",)) + status) == (
        "read",
        [by_json(edited({"status": b"1"}, drop=("outcome",))), by_json(status)],
    )


# --- random damage: the decoder, else JSON, reads as the JSON path alone --------------------


def first(case: tuple[bytes, AuditEvent]) -> bytes:
    return case[0]


PLAIN_LINES = [line for line in map(line_of, VARIANTS) if line.isascii()]
MEMBERS = (
    "kind",
    "time",
    "request_id",
    "principal",
    "remote",
    "operation",
    "path",
    "environment",
    "category",
    "outcome",
    "status",
    "emergency",
    "data",
    "seq",
    "hash",
)
VALUES = (
    b'"x"',
    b'"response"',
    b'"request"',
    b'"denied"',
    b"1",
    b"0",
    b"403",
    b"true",
    b"false",
    b"null",
    b"200.0",
    b"[]",
    b'{"a":[1]}',
    b'"2025-03-04T10:15:30Z"',
    b'"yesterday"',
    b"18446744073709551616",
    b"NaN",
    rb'"\ud800"',
    rb'"\u0070"',
)
FITTING = {
    "status": (b"200", b"403", b"500", b"-0", b"null"),
    "emergency": (b"true", b"false", b"null"),
    "seq": (b"8",),
    "data": (b'{"value":"v"}', b"null"),
    "time": (
        b'"2025-03-04T10:15:30Z"',
        b'"2025-03-04T10:15:30.5+02:00"',
        b'"2025-02-30T00:00:00Z"',
    ),
    "kind": (b'"response"', b'"request"'),
    "text": (b'"x"', b'"denied"', b'"secrets.list"', b'"production"', b'""', b"null"),
}
PLACES = (b'"kind":"response",', b',"emergency":', b',"data":', b',"hash":"')
BYTES = st.one_of(
    st.sampled_from(b' "{}[],:\\0123456789eE-+.tfnu\n\t\r\x00\xff'),
    st.integers(0, 127),
    st.integers(128, 255),
)


ASCII_TEXT = st.text(st.characters(max_codepoint=127), max_size=12)


@st.composite
def ascii_rendered(draw: st.DrawFn) -> bytes:
    """A response line ``render_line`` wrote that the decoder takes (ASCII)."""
    event = response(
        time=draw(TIMES),
        request_id=draw(ASCII_TEXT),
        principal=draw(st.none() | ASCII_TEXT),
        user_agent=draw(ASCII_TEXT),
        operation=draw(st.sampled_from(sorted(ROUTE_OPERATIONS)) | ASCII_TEXT),
        environment=draw(st.none() | ASCII_TEXT),
        status=draw(STATUS),
        emergency=draw(st.booleans()),
        data=draw(st.none() | st.dictionaries(ASCII_TEXT, st.integers(0, 9), max_size=2)),
    )
    line = line_of(event)
    assert decoder_takes(line)
    return line


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A response line ``render_line`` wrote (mostly ASCII ones, which the decoder takes),
    then one to three of: a byte flipped, inserted or deleted, a member repeated (a value of
    any type, at the start, after the kind, before emergency, data or the hash)."""
    line = draw(st.one_of(ascii_rendered(), st.sampled_from(PLAIN_LINES), rendered().map(first)))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["member", "flip", "insert", "delete", "member"]))
        if how == "member":
            key = draw(st.sampled_from(MEMBERS))
            fitting = FITTING.get(key, FITTING["text"])  # of the type render_line writes
            value = draw(st.sampled_from(fitting) | st.sampled_from(VALUES))
            member = b'"%s":%s' % (key.encode(), value)
            place = draw(st.sampled_from(PLACES))
            at = line.rfind(place) if place == b',"hash":"' else line.find(place)
            if at < 0 or place.endswith(b","):
                at = (at + len(place)) if at >= 0 else 1
                line = line[:at] + member + b"," + line[at:]
            else:
                line = line[:at] + b"," + member + line[at:]
            continue
        at = draw(st.integers(0, max(len(line) - 1, 0)))
        if how == "flip":
            line = line[:at] + bytes([draw(BYTES)]) + line[at + 1 :]
        elif how == "insert":
            line = line[:at] + bytes([draw(BYTES)]) + line[at:]
        else:
            line = line[:at] + line[at + 1 :]
    return line


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_a_damaged_response_line_reads_as_the_json_path_reads_it(line: bytes) -> None:
    assert_as_json_path(line)
