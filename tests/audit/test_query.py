"""Audit queries over real record files: filters, ``who_read``, reading files strictly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.query import (
    AuditQuery,
    ReadRow,
    operations,
    read_records,
    search,
    who_read,
)
from medsecrets.audit.record import AuditEvent, LineError, Salter
from medsecrets.errors import InvalidRequest
from medsecrets.monitor.alert import Alert
from tests.audit.chainmaker import BASE_TIME, CANARY, SALT_KEY, ChainMaker, parse, write_log

DB = "medessence/production/database/primary"  # random traffic uses main/replica
T = [BASE_TIME + dt.timedelta(hours=h) for h in range(10)]


@pytest.fixture(scope="module")
def maker() -> ChainMaker:
    """Known reads of ``DB`` at hours 1-5 amid random traffic, over two rotated files."""
    m = ChainMaker(seed=31)
    m.clock = T[0]
    m.add_traffic(40)  # random traffic during hour 0 (at most 20 x 30 s)
    m.request_pair(
        time=T[1],
        principal="alice",
        remote="10.0.0.5",
        operation="secrets.read",
        path=DB,
        version=1,
        status=200,
    )
    m.request_pair(
        time=T[2],
        principal="bob",
        remote="192.168.1.20",
        user_agent="curl/8",
        operation="secrets.read",
        path=DB,
        version=2,
        status=200,
    )
    m.request_pair(time=T[3], principal="carol", operation="secrets.read", path=DB, status=403)
    m.request_pair(time=T[3], principal="alice", operation="metadata.read", path=DB, status=200)
    m.request_pair(
        time=T[4], principal="alice", operation="secrets.read", path=DB + "-old", status=200
    )
    m.request_pair(
        time=T[5],
        principal="svc-inference",
        remote="10.0.0.6",
        operation="secrets.read",
        path=DB,
        version=2,
        status=200,
    )
    alert = Alert(
        detector="rate",
        severity="high",
        time=T[5],
        summary="bob read 51 secrets in 300 s",
        key="bob",
        principal="bob",
        source="192.168.1.20",
        path=DB,
        category="database",
        environment="production",
        count=51,
    )
    m.append(AuditEvent(kind="alert", time=T[5], extra={"alert": alert.to_dict()}))
    m.clock = T[6]
    m.add_traffic(40)
    return m


@pytest.fixture(scope="module")
def files(maker: ChainMaker, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("audit")
    return [
        write_log(folder / "audit.log.1", maker.lines[:45]),
        write_log(folder / "audit.log", maker.lines[45:]),
    ]


@pytest.fixture(scope="module")
def records(files: list[Path]) -> list[dict[str, object]]:
    return list(read_records(files))


def test_read_records_reads_every_line_of_every_file_in_order(
    maker: ChainMaker, records: list[dict[str, object]]
) -> None:
    assert records == [parse(line) for line in maker.lines]
    assert [r["seq"] for r in records] == list(range(1, len(maker.lines) + 1))


def test_no_secret_value_reaches_a_record(files: list[Path], maker: ChainMaker) -> None:
    assert any(b"secrets.write" in line for line in maker.lines)
    for path in files:
        assert CANARY.encode() not in path.read_bytes()


def test_who_read_lists_every_successful_read_of_every_version(
    records: list[dict[str, object]],
) -> None:
    rows = who_read(reversed(records), DB)  # order of input does not matter
    assert [(r.principal, r.version, r.remote, r.time) for r in rows] == [
        ("alice", 1, "10.0.0.5", T[1]),
        ("bob", 2, "192.168.1.20", T[2]),
        ("svc-inference", 2, "10.0.0.6", T[5]),
    ]
    bob = rows[1]
    assert isinstance(bob, ReadRow)
    assert bob.user_agent == "curl/8"
    assert bob.path == DB
    assert bob.accessor is not None and bob.accessor.startswith("hmac-sha256:")
    assert bob.request_id.startswith("req-")
    assert [r.principal for r in who_read(records, DB, T[2])] == ["bob", "svc-inference"]
    naive = T[2].replace(tzinfo=None) + dt.timedelta(seconds=1)
    assert [r.principal for r in who_read(records, "/" + DB + "/", naive)] == ["svc-inference"]
    assert who_read(records, DB + "-missing") == []
    assert who_read(records, "medessence/production/database") == []  # exact path only


def query(records: list[dict[str, object]], **filters: object) -> list[dict[str, object]]:
    return [dict(r) for r in search(records, AuditQuery(**filters))]  # type: ignore[arg-type]


def test_each_filter_works_alone(records: list[dict[str, object]]) -> None:
    assert query(records) == records
    bob = query(records, principal="bob")
    assert {r.get("principal") for r in bob} == {"bob", None}  # None: the alert about bob
    assert all(r["alert"]["principal"] == "bob" for r in bob if r["kind"] == "alert")  # type: ignore[index]
    assert {r["kind"] for r in query(records, kind="alert")} == {"alert"}
    for name in ("operation", "outcome", "category", "environment"):
        values = {r[name] for r in records if r.get(name) is not None}
        assert len(values) > 1, name
        for value in values:
            found = query(records, **{name: value})
            assert found, (name, value)
            assert all(r.get(name) == value or r["kind"] == "alert" for r in found)
            assert len(found) == sum(1 for r in records if r.get(name) == value) + sum(
                1
                for r in records
                if r["kind"] == "alert" and r["alert"].get(name) == value  # type: ignore[union-attr]
            )
    within = query(records, since=T[1], until=T[5])
    assert {r["time"] for r in within} == {
        "2026-01-05T09:00:00.000000Z",
        "2026-01-05T10:00:00.000000Z",
        "2026-01-05T11:00:00.000000Z",
        "2026-01-05T12:00:00.000000Z",
    }


def test_path_prefix_matches_whole_segments(records: list[dict[str, object]]) -> None:
    production = query(records, path_prefix="medessence/production")
    assert production
    assert {r["kind"] for r in production} == {"request", "response", "alert"}
    assert all(
        str(r.get("path") or r["alert"]["path"]).startswith("medessence/production/")  # type: ignore[index]
        for r in production
    )
    assert query(records, path_prefix="medessence/prod") == []
    exact = query(records, path_prefix=DB + "/", kind="response")
    assert {r["principal"] for r in exact} == {"alice", "bob", "carol", "svc-inference"}
    assert all(r["path"] == DB for r in exact)


def test_filters_combine(records: list[dict[str, object]]) -> None:
    found = query(
        records,
        principal="alice",
        path_prefix=DB,
        operation="secrets.read",
        outcome="success",
        kind="response",
        since=T[0],
        until=T[9],
    )
    assert [(r["version"], r["time"]) for r in found] == [(1, "2026-01-05T09:00:00.000000Z")]
    denied = query(records, outcome="denied", path_prefix=DB, environment="production")
    assert {r["principal"] for r in denied} >= {"carol"}
    assert query(records, principal="carol", outcome="success", path_prefix=DB) == []


def test_principal_matches_a_token_accessor(records: list[dict[str, object]]) -> None:
    token = "tok-known"
    maker_two = ChainMaker(seed=1)
    maker_two.append(AuditEvent(kind="request", time=T[1], token=token, principal="dave"))
    record = parse(maker_two.lines[0])
    accessor = Salter(SALT_KEY).hash(token)
    assert query([record], principal=accessor) == [record]
    assert query([record], principal="dave") == [record]
    assert query(records, principal=accessor) == []


def test_alert_records_match_on_their_alert(records: list[dict[str, object]]) -> None:
    found = query(records, principal="bob", kind="alert", category="database")
    assert len(found) == 1
    assert found[0]["alert"]["detector"] == "rate"  # type: ignore[index]
    assert query(records, kind="alert", path_prefix="medessence/staging") == []


def test_read_records_names_the_bad_line(tmp_path: Path, maker: ChainMaker) -> None:
    path = write_log(tmp_path / "audit.log", [*maker.lines[:3], b"\n", *maker.lines[3:5]])
    reader = read_records([path])
    assert [r["seq"] for r in (next(reader), next(reader), next(reader))] == [1, 2, 3]
    with pytest.raises(LineError, match=r"audit.log:4: not a JSON record"):
        next(reader)
    write_log(path, [maker.lines[0], b"[1, 2]\n"])
    with pytest.raises(LineError, match=r"audit.log:2: not a JSON object"):
        list(read_records([path]))
    write_log(path, [maker.lines[0], maker.lines[1][:50]])
    with pytest.raises(LineError, match=r"audit.log:2:"):
        list(read_records([path]))


def test_read_records_decodes_encrypted_files(tmp_path: Path, maker: ChainMaker) -> None:
    cipher = RecordCipher(b"\x24" * 32)
    sealed = [cipher.seal(line) for line in maker.lines]
    path = write_log(tmp_path / "audit.log", sealed)
    assert list(read_records([path], decode=cipher.open)) == [parse(x) for x in maker.lines]
    write_log(path, [*sealed[:2], sealed[2].replace(b'"enc":"', b'"enc":"AAAA')])
    with pytest.raises(LineError, match=r"audit.log:3: cannot be decoded"):
        list(read_records([path], decode=cipher.open))


def test_a_filter_value_no_record_can_carry_is_refused(records: list[dict[str, object]]) -> None:
    # secret.read for secrets.read used to answer "nobody read it": an empty result.
    for name, value in (("operation", "secret.read"), ("outcome", "ok"), ("kind", "reply")):
        with pytest.raises(InvalidRequest, match=rf"unknown {name} '{value}': one of "):
            AuditQuery(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=r"one of .*secrets\.read.*sys\.metrics"):
        AuditQuery(operation="secret.read")
    assert {r["operation"] for r in records if r.get("operation")} <= operations()
    assert query(records, operation="sys.metrics") == []  # audited, though not a core route


@pytest.mark.parametrize(
    ("prefix", "rule"),
    [
        ("medessence//x", r"path_prefix has an empty segment"),
        ("medessence/../x", r"path_prefix segment '\.\.' is not allowed"),
        ("medessence/./x", r"path_prefix segment '\.' is not allowed"),
        ("medessence/prod uction", r"path_prefix segment 'prod uction' may only contain"),
        ("medessence/\x00", r"path_prefix contains a control character"),
        ("a/" * 11, r"path_prefix has more than 10 segments"),
    ],
)
def test_a_path_prefix_no_secret_path_can_have_is_refused(prefix: str, rule: str) -> None:
    # medessence//x used to answer with nothing: "nobody touched it".
    with pytest.raises(InvalidRequest, match=rule):
        AuditQuery(path_prefix=prefix)


def test_a_path_prefix_of_whole_segments_is_taken(records: list[dict[str, object]]) -> None:
    for prefix in ("", "medessence", "medessence/production/", "/medessence/production", DB):
        AuditQuery(path_prefix=prefix)
    assert query(records, path_prefix="/medessence/production/") == query(
        records, path_prefix="medessence/production"
    )


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (T[2], T[1]),  # later
        (T[1], T[1]),  # the same: since is inclusive, until exclusive
        (T[1].replace(tzinfo=None), T[1]),  # naive is UTC
        (T[1], T[1].astimezone(dt.timezone(dt.timedelta(hours=-5)))),  # the same instant
    ],
)
def test_a_window_with_no_time_in_it_is_refused(since: dt.datetime, until: dt.datetime) -> None:
    with pytest.raises(InvalidRequest, match=r"^until \(.+Z\) must be later than since \(.+Z\)"):
        AuditQuery(since=since, until=until)


def test_a_window_of_a_microsecond_is_taken(records: list[dict[str, object]]) -> None:
    at = next(r for r in records if r["time"] == "2026-01-05T09:00:00.000000Z")
    found = query(records, since=T[1], until=T[1] + dt.timedelta(microseconds=1))
    assert at in found
    assert {r["time"] for r in found} == {"2026-01-05T09:00:00.000000Z"}
