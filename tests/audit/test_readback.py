"""Reading a device back: every chain (workers, earlier runs, node ids), merged by time."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.database import DatabaseAuditDevice
from medsecrets.audit.readback import (
    MAX_LINE_BYTES,
    Unreadable,
    chain_start,
    database_nodes,
    database_records,
    file_chains,
    file_records,
    given_chains,
    line_decoder,
    merged,
    merged_in_turn,
)
from medsecrets.audit.record import AuditEvent, render_line
from medsecrets.storage.sqlite import SqliteStorage

T0 = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)


def _record(seq: int, seconds: float, who: str) -> bytes:
    """A response record line (with ``\n``) as the devices store it."""
    event = AuditEvent(
        kind="response",
        time=T0 + dt.timedelta(seconds=seconds),
        request_id=f"r{seq}",
        principal=who,
        operation="secrets.read",
        path="medessence/production/database",
        status=200,
    )
    line, _ = render_line(event, seq=seq, prev="0" * 64, node="n", device="d", salter=None)
    return line


def _write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def test_file_chains_finds_the_base_and_every_worker_chain(tmp_path: Path) -> None:
    base = tmp_path / "audit.jsonl"
    names = [
        "audit.jsonl",
        "audit-20261205T090000Z-1.jsonl",
        "audit-20261205T090500Z-12.jsonl",
        "audit-20261205T090500Z-7.jsonl",  # the same second: seq decides, not the name
        "audit-20261205T090500Z-7-1.jsonl",
        "audit-4242.jsonl",
        "audit-4242-20261205T090000Z-1.jsonl",
        "audit-17.jsonl",  # an earlier run's worker
        "checkpoints.jsonl",
        "audit.jsonl.bak",
        "other-1.jsonl",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    chains = [[path.name for path in chain] for chain in file_chains(base)]
    assert chains == [
        [
            "audit-20261205T090000Z-1.jsonl",
            "audit-20261205T090500Z-7.jsonl",
            "audit-20261205T090500Z-7-1.jsonl",
            "audit-20261205T090500Z-12.jsonl",
            "audit.jsonl",
        ],
        ["audit-17.jsonl"],
        ["audit-4242-20261205T090000Z-1.jsonl", "audit-4242.jsonl"],
    ]
    assert file_chains(tmp_path / "missing" / "audit.jsonl") == []


def test_chains_are_merged_by_time(tmp_path: Path) -> None:
    one = _write(tmp_path / "audit-1.jsonl", _record(1, 0, "a"), _record(2, 2, "a"))
    two = _write(tmp_path / "audit-2.jsonl", _record(1, 1, "b"), _record(2, 3, "b"))
    unreadable = Unreadable()
    records = merged(
        file_records([path], decode=None, unreadable=unreadable) for path in (one, two)
    )
    assert [(r["principal"], r["seq"]) for r in records] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
    ]
    assert unreadable.lines == 0


def test_unreadable_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "audit.jsonl",
        _record(1, 0, "a"),
        b"not json\n",
        b"[1, 2]\n",
        b"x" * (MAX_LINE_BYTES + 10) + b"\n",
        b"[" * 100_000 + b"\n",
        _record(2, 1, "a"),
        b'{"seq": 3, "torn',  # being written: not read, not counted
    )
    unreadable = Unreadable()
    records = list(file_records([path], decode=None, unreadable=unreadable))
    assert [r["seq"] for r in records] == [1, 2]
    assert unreadable.lines == 4
    assert "lines=4" in repr(unreadable)


def test_a_device_switched_to_encryption_reads_both_kinds_of_line(tmp_path: Path) -> None:
    cipher = RecordCipher(os.urandom(32))
    plain = _record(1, 0, "a")
    sealed = cipher.seal(_record(2, 1, "b"))
    assert line_decoder(None) is None
    decode = line_decoder(cipher)
    path = _write(tmp_path / "audit.jsonl", plain, sealed)
    unreadable = Unreadable()
    records = list(file_records([path], decode=decode, unreadable=unreadable))
    assert [r["principal"] for r in records] == ["a", "b"]
    # under another key the sealed line is unreadable, not a crash
    other = line_decoder(RecordCipher(os.urandom(32)))
    assert [r["seq"] for r in file_records([path], decode=other, unreadable=unreadable)] == [1]
    assert unreadable.lines == 1


def test_since_skips_rotated_files_rotated_before_it(tmp_path: Path) -> None:
    old = _write(tmp_path / "audit-20261205T090000Z-1.jsonl", _record(1, -60, "old"))
    edge = _write(tmp_path / "audit-20261205T090010Z-2.jsonl", _record(2, 10.5, "edge"))
    live = _write(tmp_path / "audit.jsonl", _record(3, 20, "new"))
    unreadable = Unreadable()
    # the edge file was rotated at 09:00:10 (second resolution) and holds 09:00:10.5
    since = T0 + dt.timedelta(seconds=10.2)
    found = file_records([old, edge, live], decode=None, unreadable=unreadable, since=since)
    assert [r["principal"] for r in found] == ["edge", "new"]
    naive = since.replace(tzinfo=None)  # naive times are UTC
    found = file_records([old, edge, live], decode=None, unreadable=unreadable, since=naive)
    assert [r["principal"] for r in found] == ["edge", "new"]
    ancient = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
    found = file_records([old, edge, live], decode=None, unreadable=unreadable, since=ancient)
    assert len(list(found)) == 3


def test_a_needle_skips_lines_before_they_are_parsed(tmp_path: Path) -> None:
    path = _write(tmp_path / "audit.jsonl", _record(1, 0, "alice"), b"junk\n", _record(2, 1, "bob"))
    unreadable = Unreadable()
    found = file_records([path], decode=None, unreadable=unreadable, needle=b'"bob"')
    assert [r["principal"] for r in found] == ["bob"]
    assert unreadable.lines == 1  # alice's record skipped unread; the junk line counted


def test_database_nodes_jumps_over_each_node(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "s.db")
    try:
        for node, name, count in (
            ("a", "db", 2),
            ("a-b", "db", 1),  # sorts before "a/" ("-" < "/")
            ("a-b", "other", 1),
            ("b", "other", 3),  # another device only
            ("host-1234", "db", 1),
        ):
            device = DatabaseAuditDevice(name, storage, node=node)
            device.open()
            device.write([_record(seq, seq, node)[:-1] for seq in range(1, count + 1)])
        assert database_nodes(storage, "db") == ["a-b", "a", "host-1234"]  # key order
        assert database_nodes(storage, "other") == ["a-b", "b"]
        assert database_nodes(storage, "none") == []
        unreadable = Unreadable()
        chains = [
            database_records(storage, "db", node, unreadable=unreadable)
            for node in database_nodes(storage, "db")
        ]
        assert [(r["principal"], r["seq"]) for r in merged(chains)] == [
            ("a-b", 1),  # the same time: chain order
            ("a", 1),
            ("host-1234", 1),
            ("a", 2),
        ]
    finally:
        storage.close()


def test_a_json_object_that_is_no_record_is_counted_not_answered(tmp_path: Path) -> None:
    # Offline (query.read_records) such a line is an error; the server used to answer it:
    # who-read counted a bare object naming a read as a read.
    forged = b'{"kind":"response","operation":"secrets.read","outcome":"success",'
    forged += b'"path":"medessence/production/database","time":"2026-12-05T09:00:00.5Z"}\n'
    path = _write(
        tmp_path / "audit.jsonl",
        _record(1, 0, "a"),
        b"{}\n",
        forged,
        b'{"kind":"request","seq":true,"hash":"x"}\n',  # a boolean is no seq
        _record(2, 1, "b"),
    )
    for needle in (None, b'"operation":"secrets.read"'):
        unreadable = Unreadable()
        found = file_records([path], decode=None, unreadable=unreadable, needle=needle)
        assert [r["principal"] for r in found] == ["a", "b"]
        assert unreadable.lines == 3
    storage = SqliteStorage(tmp_path / "s.db")
    try:
        storage.put("audit/n/db/00000000000000000001", _record(1, 0, "a").rstrip(b"\n"))
        storage.put("audit/n/db/00000000000000000002", b"{}")
        unreadable = Unreadable()
        found = database_records(storage, "db", "n", unreadable=unreadable)
        assert [r["principal"] for r in found] == ["a"] and unreadable.lines == 1
    finally:
        storage.close()


def test_given_chains_groups_files_by_directory_and_stem_in_chain_order(tmp_path: Path) -> None:
    node = tmp_path / "node-b"
    names = [
        "audit-4242.jsonl",
        "audit.jsonl",
        "audit-20261205T090500Z-000000000012.jsonl",
        "audit-4242-20261205T090000Z-000000000001.jsonl",
        "audit-20261205T090500Z-000000000007-1.jsonl",
        "audit-20261205T090500Z-000000000007.jsonl",
        "copy.jsonl",
    ]
    given = [tmp_path / name for name in names] + [node / "audit.jsonl", tmp_path / "audit.jsonl"]
    chains = [[str(path.relative_to(tmp_path)) for path in chain] for chain in given_chains(given)]
    assert chains == [
        [
            "audit-20261205T090500Z-000000000007.jsonl",
            "audit-20261205T090500Z-000000000007-1.jsonl",
            "audit-20261205T090500Z-000000000012.jsonl",
            "audit.jsonl",  # given twice, read once
        ],
        ["audit-4242-20261205T090000Z-000000000001.jsonl", "audit-4242.jsonl"],
        ["copy.jsonl"],
        ["node-b/audit.jsonl"],  # another node's device: a chain of its own
    ]


def test_merged_in_turn_starts_a_chain_when_the_merge_reaches_it(tmp_path: Path) -> None:
    started: list[str] = []

    def chain(name: str, *seconds: float) -> tuple[str, Callable[[], Iterator[dict[str, object]]]]:
        path = _write(
            tmp_path / f"{name}.jsonl",
            *(_record(n + 1, s, name) for n, s in enumerate(seconds)),
        )

        def open_() -> Iterator[dict[str, object]]:
            started.append(name)
            return file_records([path], decode=None, unreadable=Unreadable())

        return chain_start([path]), open_

    chains = [chain("late", 10, 11), chain("a", 0, 2, 4), chain("b", 1, 4, 5), chain("c", 4)]
    records = merged_in_turn(chains)
    order = []
    for record in records:
        order.append((record["principal"], record["seq"]))
        if record["principal"] == "b" and record["seq"] == 1:
            assert started == ["a", "b"]  # neither c (at 4 s) nor late opened yet
    assert order == [
        ("a", 1), ("b", 1), ("a", 2),
        ("a", 3), ("b", 2), ("c", 1),  # equal times: in the order the chains are given
        ("b", 3), ("late", 1), ("late", 2),
    ]  # fmt: skip
    assert started == ["a", "b", "c", "late"]
    empty = _write(tmp_path / "empty.jsonl")
    assert chain_start([empty, tmp_path / "b.jsonl"]) == chain_start([tmp_path / "b.jsonl"])
    assert chain_start([_write(tmp_path / "bad.jsonl", b"not json\n")]) == ""  # at once
    assert chain_start([empty]) == ""


def test_merged_in_turn_closes_the_readers_it_started_when_closed_early(tmp_path: Path) -> None:
    closed: list[int] = []

    def reader(index: int) -> Iterator[dict[str, object]]:
        try:
            yield {"time": f"2026-01-01T00:00:0{index}.000000Z", "seq": index}
            yield {"time": f"2026-01-01T00:00:0{index + 2}.000000Z", "seq": index}
        finally:
            closed.append(index)

    merge = merged_in_turn([("", lambda: reader(1)), ("", lambda: reader(2))])
    assert next(merge)["seq"] == 1
    merge.close()
    assert sorted(closed) == [1, 2]
