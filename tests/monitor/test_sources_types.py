"""Type-confused members in the logs ``audit analyze`` reads: events or ``LogFormatError``.

``monitor.sources`` promises that a malformed log raises ``LogFormatError`` naming the file
and line, or is read in a documented way (a member of the wrong type reads as absent), and
that nothing else escapes. Here realistic records of each format (our audit log, CloudTrail
documents and an EventBridge envelope, Vault response and request entries, written by
``medsecrets.testing.anomalies.write``) have each of their members, nested ones and list
items too, replaced by a value of every JSON type (and a few hostile ones: numbers JSON
parsers read differently, NaN, a lone surrogate, a list nested as deep as orjson reads).
Every entry point (``read_events``, ``read_batches``, ``rows_in_block``) must give the same
events or the same ``LogFormatError``; an event must be well typed (its ``time`` a datetime:
alerts show it); a text member given another type must read as if it were absent.
``analyze`` and the CLI (``medsecrets audit analyze``, a process of its own) are run on the
cases that crashed: a deeply nested Vault ``auth.metadata.emergency`` (a ``RecursionError``
from ``str()``) and a time outside the years 1-9999 (a ``ValueError`` when an alert showed
the event's time).
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.cli.conftest import run_cli

from medsecrets.monitor.analyze import analyze
from medsecrets.monitor.events import AccessEvent
from medsecrets.monitor.sources import (
    LINE_FORMATS,
    Format,
    LogFormatError,
    Skipped,
    events_of,
    read_batches,
    read_events,
    rows_in_block,
)
from medsecrets.testing.anomalies import generate, write

SEED = 11

Path_ = tuple[str | int, ...]
"""A member path in a document: keys and list indexes."""


Document = Any
"""A sample record or document, as ``json.loads`` gives it."""


def _first(items: list[Document], test: Callable[[Document], bool]) -> Document:
    return copy.deepcopy(next(item for item in items if test(item)))


def _generated() -> dict[str, dict[str, Document]]:
    """Sample documents of each format by name, from the synthetic data set (a line of a line
    log, a CloudTrail file), with the members the parsers read that it lacks added."""
    records, labels = generate(SEED, normal=100, per_kind=1)
    with tempfile.TemporaryDirectory() as folder:
        files = {fmt: write(Path(folder) / fmt, fmt, records, labels) for fmt in FORMATS}
        ours = [json.loads(line) for line in files["ours"][0].read_bytes().splitlines()]
        vault = [json.loads(line) for line in files["vault"][0].read_bytes().splitlines()]
        trail = [
            record
            for path in files["cloudtrail"]
            for record in json.loads(gzip.decompress(path.read_bytes()))["Records"]
        ]

    def auth(entry: Document) -> Document:
        return entry.get("auth") or {}

    def metadata(entry: Document) -> Document:
        return auth(entry).get("metadata") or {}

    def identity(record: Document) -> str:
        arn: str = record["userIdentity"].get("arn", "")
        return arn

    service = _first(
        trail, lambda r: r["eventName"] == "GetSecretValue" and "-task/" in identity(r)
    )
    service["sharedEventID"] = "0f3c5a1e-2b7d-4c1a-9e8f-5d6c7b8a9f01"
    service["userIdentity"]["sessionContext"]["sourceIdentity"] = "alice"
    iam_user = copy.deepcopy(service)
    iam_user["userIdentity"] = {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLE",
        "arn": "arn:aws:iam::111122223333:user/ops/break-glass-admin",
        "userName": "break-glass-admin",
        "invokedBy": "signin.amazonaws.com",
    }
    root = copy.deepcopy(service)
    root["userIdentity"] = {
        "type": "Root",
        "principalId": "111122223333",
        "arn": "arn:aws:iam::111122223333:root",
    }
    events = {
        "a service's read": service,
        "a list": _first(trail, lambda r: r["eventName"] == "ListSecrets"),
        "a refused read": _first(trail, lambda r: r.get("errorCode") == "AccessDenied"),
        "a break-glass read": _first(trail, lambda r: "BreakGlass" in identity(r)),
        "a KMS call": _first(trail, lambda r: r["eventSource"] == "kms.amazonaws.com"),
        "an IAM user's read": iam_user,
        "the root user's read": root,
    }
    cloudtrail = {name: {"Records": [event]} for name, event in events.items()}
    cloudtrail["an EventBridge envelope"] = {
        "version": "0",
        "id": "6f7e8d9c-0b1a-2c3d-4e5f-6a7b8c9d0e1f",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager",
        "detail": copy.deepcopy(service),
    }
    cloudtrail["a digest file"] = {
        "awsAccountId": "111122223333",
        "digestStartTime": "2025-03-04T10:00:00Z",
        "digestEndTime": "2025-03-04T11:00:00Z",
        "logFiles": [{"s3Object": "AWSLogs/x.json.gz", "hashValue": "ab12"}],
    }
    return {
        "ours": {
            "a break-glass read": _first(
                ours, lambda r: r["kind"] == "response" and r["emergency"] is True
            ),
            "a refused call": _first(
                ours, lambda r: r["kind"] == "response" and r["status"] in (401, 403)
            ),
            "a request record": _first(ours, lambda r: r["kind"] == "request"),
        },
        "cloudtrail": cloudtrail,
        "vault": {
            "a request entry": _first(vault, lambda e: e["type"] == "request"),
            "an AppRole read": _first(
                vault, lambda e: e["type"] == "response" and "role_name" in metadata(e)
            ),
            "an unnamed token's call": _first(
                vault, lambda e: e["type"] == "response" and auth(e).get("display_name") == "token"
            ),
            "a break-glass read": _first(
                vault, lambda e: e["type"] == "response" and "emergency" in metadata(e)
            ),
            "a refused call": _first(vault, lambda e: e["type"] == "response" and "error" in e),
        },
    }


FORMATS: tuple[Format, ...] = ("ours", "cloudtrail", "vault")
SAMPLES = _generated()

DEEP = 1000
"""Levels of a nested list value: orjson reads up to 1024, ``str()`` of it exceeds the
interpreter's recursion limit (1000)."""

VALUES: dict[str, Callable[[object], str]] = {
    "null": lambda _: "null",
    "true": lambda _: "true",
    "false": lambda _: "false",
    "0": lambda _: "0",
    "-1": lambda _: "-1",
    "1.5": lambda _: "1.5",
    "1e400": lambda _: "1e400",
    "2**64": lambda _: str(2**64),
    "a 5000-digit int": lambda _: "9" * 5000,
    "NaN": lambda _: "NaN",
    "-Infinity": lambda _: "-Infinity",
    "empty text": lambda _: '""',
    "long text": lambda _: json.dumps("x" * 100_000),
    "a lone surrogate": lambda _: '"a\\ud800b"',
    "[]": lambda _: "[]",
    "[x]": lambda original: "[" + json.dumps(original) + "]",
    "{}": lambda _: "{}",
    '{"a":1}': lambda _: '{"a":1}',
    f"a list {DEEP} deep": lambda _: "[" * DEEP + "]" * DEEP,
}
"""Replacement values as JSON text, from the original value (``[x]``: it in a list)."""
TEXT_VALUES = frozenset({"empty text", "long text", "a lone surrogate"})
NOT_JSON = frozenset({"a 5000-digit int"})
"""Values that make a line or document malformed JSON to our parsers (orjson does not read
the number, the standard library reads at most 4300 digits): ``LogFormatError``, unless the
line is skipped unparsed (a request record or entry)."""

_SENTINEL = "\x00replaced\x00"


def member_paths(value: object, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every member path of ``value``: itself, then its members and items, depth first."""
    yield prefix
    if isinstance(value, dict):
        for key, member in value.items():
            yield from member_paths(member, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from member_paths(item, (*prefix, index))


def named(path: Path_) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return text.lstrip(".") or "(the whole)"


def at(document: Document, path: Path_) -> Document:
    for part in path:
        document = document[part]
    return document


def compact(document: Document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def replaced(document: Document, path: Path_, raw: str | None) -> bytes:
    """``document`` as compact JSON with the value at ``path`` replaced by the JSON text
    ``raw`` (``None``: the member removed)."""
    if not path:
        assert raw is not None
        return raw.encode()
    changed = copy.deepcopy(document)
    parent = at(changed, path[:-1])
    if raw is None:
        del parent[path[-1]]
        return compact(changed)
    parent[path[-1]] = _SENTINEL
    text = json.dumps(changed, separators=(",", ":"))
    return text.replace(json.dumps(_SENTINEL), raw, 1).encode()


CASES = [
    pytest.param(fmt, path, value, id=f"{fmt}:{named(path)}={value}")
    for fmt in FORMATS
    for path in dict.fromkeys(p for sample in SAMPLES[fmt].values() for p in member_paths(sample))
    for value in VALUES
]


Read = tuple[str, object]
"""``("events", [(ts, fields...), ...])`` or ``("refused", (line, problem))``."""


def well_typed(event: AccessEvent) -> tuple[object, ...]:
    """The event's fields, once checked to be of their types (and its time a datetime)."""
    assert type(event.ts) is float and math.isfinite(event.ts)
    assert isinstance(event.time, dt.datetime)  # alerts and reports show it
    for text in (event.principal, event.source, event.operation, event.raw_operation):
        assert type(text) is str
    assert type(event.path) is str and type(event.request_id) is str
    assert event.environment is None or type(event.environment) is str
    assert event.category is None or type(event.category) is str
    assert event.outcome in ("success", "denied", "error", "failure")
    assert type(event.emergency) is bool
    return (
        event.ts,
        event.principal,
        event.source,
        event.operation,
        event.raw_operation,
        event.path,
        event.environment,
        event.category,
        event.outcome,
        event.emergency,
        event.request_id,
    )


def outcome_of(read: Callable[[], list[AccessEvent]], file: str) -> Read:
    """What ``read`` gives: events (well typed) or a ``LogFormatError`` naming ``file``;
    anything else escapes and fails the test."""
    try:
        events = read()
    except LogFormatError as exc:
        assert exc.file == file
        return "refused", (exc.line, exc.problem)
    return "events", [well_typed(event) for event in events]


def every_reading(fmt: Format, data: bytes, folder: Path, decoy: Callable[[str], bool]) -> Read:
    """``data`` as a log of ``fmt`` read through every entry point: they must agree."""
    path = folder / f"case.{fmt}"
    path.write_bytes(data)
    name = str(path)
    reads = [
        outcome_of(lambda: list(read_events(path, fmt, skipped=Skipped(), decoy=decoy)), name),
        outcome_of(
            lambda: [
                event
                for batch in read_batches(path, fmt, skipped=Skipped(), decoy=decoy)
                for event in batch
            ],
            name,
        ),
    ]
    if fmt in LINE_FORMATS:
        reads.append(outcome_of(lambda: events_of(rows_in_block(fmt, data, file=name)), name))
    assert all(read == reads[0] for read in reads), reads
    return reads[0]


def as_file(fmt: Format, document: bytes) -> bytes:
    return document + b"\n" if fmt in LINE_FORMATS else document


READ_OTHERWISE: dict[tuple[str, str], str] = {
    ("ours", "kind"): "absent, the record is a response; a kind of another type is not one",
    ("vault", "auth.metadata.emergency"): 'true and 1 read as "true" and "1": emergency',
    ("cloudtrail", "digestStartTime"): "a digest file is told by its members, whatever values",
}
"""Text members that do not read as absent when given a value of another type."""


@pytest.mark.parametrize(("fmt", "path", "value"), CASES)
def test_a_member_of_any_type_gives_events_or_a_log_format_error(
    fmt: Format,
    path: Path_,
    value: str,
    tmp_path: Path,
    is_honeytoken: Callable[[str], bool],
) -> None:
    for sample in SAMPLES[fmt].values():
        try:
            original = at(sample, path)
        except (KeyError, IndexError, TypeError):
            continue  # a member another sample has
        data = as_file(fmt, replaced(sample, path, VALUES[value](original)))
        read = every_reading(fmt, data, tmp_path, is_honeytoken)
        text_member = isinstance(original, str) and path and isinstance(path[-1], str)
        if (
            text_member
            and value not in TEXT_VALUES | NOT_JSON
            and (fmt, named(path)) not in READ_OTHERWISE
        ):
            absent = as_file(fmt, replaced(sample, path, None))
            assert read == every_reading(fmt, absent, tmp_path, is_honeytoken)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(st.characters(blacklist_categories=("Cc",)), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FORMATS), st.data(), JSON_VALUES)
def test_any_json_value_at_any_member_gives_events_or_a_log_format_error(
    is_honeytoken: Callable[[str], bool], fmt: Format, data: st.DataObject, value: object
) -> None:
    sample = data.draw(st.sampled_from(list(SAMPLES[fmt].values())))
    path = data.draw(st.sampled_from(list(member_paths(sample))))
    raw = json.dumps(value)  # NaN and Infinity as the standard library writes them
    with tempfile.TemporaryDirectory() as folder:
        every_reading(fmt, as_file(fmt, replaced(sample, path, raw)), Path(folder), is_honeytoken)


# --- the crashes, through analyze and the CLI ----------------------------------------------------

EMERGENCY_PATH: Path_ = ("auth", "metadata", "emergency")
TIME_MEMBER: dict[str, Path_] = {
    "ours": ("time",),
    "cloudtrail": ("Records", 0, "eventTime"),
    "vault": ("time",),
}


def test_a_deeply_nested_vault_emergency_flag_reads_as_absent(
    tmp_path: Path, is_honeytoken: Callable[[str], bool]
) -> None:
    """``str()`` of it raised ``RecursionError``: a value that is not text, a boolean or an
    integer is no flag, as if absent (the ``break-glass`` policy alone marks the token)."""
    entry = copy.deepcopy(SAMPLES["vault"]["a break-glass read"])
    entry["auth"]["policies"] = ["default"]
    deep = VALUES[f"a list {DEEP} deep"](None)
    path = tmp_path / "vault.log"
    path.write_bytes(replaced(entry, EMERGENCY_PATH, deep) + b"\n")
    events = list(read_events(path, "vault"))
    assert [event.emergency for event in events] == [False]
    path.write_bytes(replaced(entry, EMERGENCY_PATH, None) + b"\n")
    assert list(read_events(path, "vault")) == events
    for workers in (0, 2):
        report = analyze([path], "vault", None, is_honeytoken, workers=workers)
        assert report.events == 1 and report.counts["emergency"] == 0


EDGES = {
    "0001-01-01T00:00:00Z": True,
    "9999-12-31T23:59:59Z": True,
    "9999-12-31T23:59:59.999999Z": False,  # as POSIX seconds, a float: 10000-01-01
    "0001-01-01T00:00:00+14:00": False,  # before year 1 in UTC
    "0000-12-31T23:59:59Z": False,
    "9999-12-31T23:59:60.5Z": False,  # a leap second into year 10000
    "9999-12-31T23:59:59-00:01": False,
    "10000-01-01T00:00:00Z": False,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("time", list(EDGES))
def test_a_time_outside_the_years_1_to_9999_is_a_bad_time(
    fmt: Format, time: str, tmp_path: Path, is_honeytoken: Callable[[str], bool]
) -> None:
    """``AccessEvent.time`` (an alert's time) raised ``ValueError`` for such a time: it is
    refused as a bad time, in every format, and one at the edges is read."""
    document = SAMPLES[fmt]["a break-glass read"]
    data = as_file(fmt, replaced(document, TIME_MEMBER[fmt], json.dumps(time)))
    read = every_reading(fmt, data, tmp_path, is_honeytoken)
    path = tmp_path / f"case.{fmt}"
    if EDGES[time]:
        assert read[0] == "events"
        report = analyze([path], fmt, None, is_honeytoken, workers=0)
        assert report.counts["emergency"] == 1
        assert report.alerts[0].time.year == int(time[:4])
    else:
        where = " (record 1 of Records)" if fmt == "cloudtrail" else ""
        assert read == ("refused", (1, f"bad time{where}"))
        with pytest.raises(LogFormatError, match="bad time"):
            analyze([path], fmt, None, is_honeytoken, workers=0)


def test_the_cli_gives_one_error_line_for_a_member_of_another_type(tmp_path: Path) -> None:
    """Exit 2 and one line naming the file and line, no traceback."""
    sample = SAMPLES["ours"]["a break-glass read"]
    path = tmp_path / "audit.log"
    path.write_bytes(compact(sample) + b"\n" + replaced(sample, ("time",), "[]") + b"\n")
    result = run_cli("audit", "analyze", str(path), "--output", "json")
    assert result.error(2) == f"error: {path}:2: missing or bad time"


def test_the_cli_reads_a_deeply_nested_emergency_flag_and_refuses_a_time_past_9999(
    tmp_path: Path,
) -> None:
    """Both crashed ``audit analyze``: ``unexpected RecursionError`` / ``ValueError``, exit 1."""
    deep = VALUES[f"a list {DEEP} deep"](None)
    path = tmp_path / "vault_audit.log"
    path.write_bytes(replaced(SAMPLES["vault"]["a break-glass read"], EMERGENCY_PATH, deep) + b"\n")
    report = run_cli("audit", "analyze", str(path), "--output", "json").ok().json()
    assert isinstance(report, dict)
    assert report["events"] == 1 and report["counts"]["emergency"] == 1  # its policy
    late = replaced(SAMPLES["ours"]["a break-glass read"], ("time",), '"9999-12-31T23:59:60.5Z"')
    path = tmp_path / "audit.log"
    path.write_bytes(late + b"\n")
    result = run_cli("audit", "analyze", str(path), "--output", "json")
    assert result.error(2) == f"error: {path}:1: bad time"
