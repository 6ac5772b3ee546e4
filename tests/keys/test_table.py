"""``VersionTable``: per-category KEK version lists kept through the barrier."""

from __future__ import annotations

import pytest

from medsecrets.clock import ManualClock
from medsecrets.errors import SealedError
from medsecrets.keys.table import VersionTable
from medsecrets.store import SecretStore


def test_two_first_uses_at_once_make_one_version(store: SecretStore) -> None:
    """Two processes using a category for the first time at once: the one whose version 1
    lost the race takes the winner's, not a version 2 of its own (a rotation nobody asked
    for; with aws-kms a second KMS key, and the alias moved to it)."""
    made: list[str] = []

    def other_entry(category: str, number: int) -> dict[str, str]:
        made.append(f"other-{number}")
        return {"key": f"other-{number}"}

    other = VersionTable(store.barrier, "keys/t/", clock=ManualClock(), make_entry=other_entry)

    def racing_entry(category: str, number: int) -> dict[str, str]:
        made.append(f"mine-{number}")
        if len(made) == 1:  # the other process writes its version 1 meanwhile
            other.entries(category)
        return {"key": f"mine-{number}"}

    mine = VersionTable(store.barrier, "keys/t/", clock=ManualClock(), make_entry=racing_entry)
    entries = mine.entries("auth")
    assert [(e["version"], e["key"]) for e in entries] == [("1", "other-1")]
    assert [e["key"] for e in other.entries("auth", refresh=True)] == ["other-1"]
    assert made == ["mine-1", "other-1"]


def test_rotations_at_once_both_count(store: SecretStore) -> None:
    """Two rotations racing each add a version (check-and-set, retried)."""
    other = VersionTable(
        store.barrier, "keys/t/", clock=ManualClock(), make_entry=lambda c, n: {"key": "o"}
    )
    other.entries("auth")
    raced = [False]

    def racing_entry(category: str, number: int) -> dict[str, str]:
        if not raced[0]:
            raced[0] = True
            other.add(category)
        return {"key": "m"}

    mine = VersionTable(store.barrier, "keys/t/", clock=ManualClock(), make_entry=racing_entry)
    entries = mine.add("auth")
    assert [(e["version"], e["key"]) for e in entries] == [("1", "o"), ("2", "o"), ("3", "m")]


def test_an_entry_whose_write_lost_is_handed_to_on_lost(store: SecretStore) -> None:
    """A rotation whose write lost retries as a later version; the entry made for the lost
    write is handed to ``on_lost`` once, with the entries stored at the end."""
    other = VersionTable(
        store.barrier, "keys/t/", clock=ManualClock(), make_entry=lambda c, n: {"key": f"o{n}"}
    )
    other.entries("auth")
    calls: list[tuple[str, list[str], list[str]]] = []

    def racing_entry(category: str, number: int) -> dict[str, str]:
        if number == 2:
            other.add(category)
        return {"key": f"m{number}"}

    mine = VersionTable(
        store.barrier,
        "keys/t/",
        clock=ManualClock(),
        make_entry=racing_entry,
        on_lost=lambda c, lost, stored: calls.append(
            (c, [e["key"] for e in lost], [e["key"] for e in stored])
        ),
    )
    assert [e["key"] for e in mine.add("auth")] == ["o1", "o2", "m3"]
    assert calls == [("auth", ["m2"], ["o1", "o2", "m3"])]
    assert [e["key"] for e in mine.add("auth")] == ["o1", "o2", "m3", "m4"]
    assert len(calls) == 1  # an append that lost nothing reports nothing


def test_a_first_use_that_lost_hands_its_entry_to_on_lost(store: SecretStore) -> None:
    other = VersionTable(
        store.barrier, "keys/t/", clock=ManualClock(), make_entry=lambda c, n: {"key": "o"}
    )
    calls: list[tuple[list[str], list[str]]] = []

    def racing_entry(category: str, number: int) -> dict[str, str]:
        other.entries(category)
        return {"key": "m"}

    mine = VersionTable(
        store.barrier,
        "keys/t/",
        clock=ManualClock(),
        make_entry=racing_entry,
        on_lost=lambda c, lost, stored: calls.append(
            ([e["key"] for e in lost], [e["key"] for e in stored])
        ),
    )
    assert [e["key"] for e in mine.entries("auth")] == ["o"]
    assert calls == [(["m"], ["o"])]


def test_newest_decrypts_the_table_only_when_its_record_changed(
    store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write wraps under the newest version, read afresh (another process may have
    rotated): the sealed record is read each time, but opened and parsed only when it is
    not the one the cache came from; a rotation by another table (process) is seen at the
    next ``newest``, and a seal (``forget``) drops what was kept."""
    barrier = store.barrier
    opened: list[str] = []
    real_open = barrier.open_record

    def counting_open(key: str, record: bytes) -> bytes:
        opened.append(key)
        return real_open(key, record)

    monkeypatch.setattr(barrier, "open_record", counting_open)
    mine = VersionTable(barrier, "keys/t/", clock=ManualClock(), make_entry=lambda c, n: {})
    other = VersionTable(barrier, "keys/t/", clock=ManualClock(), make_entry=lambda c, n: {})
    assert mine.newest("auth")["version"] == "1"  # created here
    opened.clear()
    for _ in range(3):
        assert mine.newest("auth")["version"] == "1"
    assert len(opened) == 1  # read once after its own write, then kept
    other.add("auth")  # another process rotates
    opened.clear()
    assert mine.newest("auth")["version"] == "2"
    assert len(opened) == 1
    mine.newest("auth")
    assert len(opened) == 1
    mine.forget()
    assert mine.newest("auth")["version"] == "2"
    assert len(opened) == 2


def test_newest_fails_closed_while_sealed(store: SecretStore) -> None:
    """A kept table is no way around the seal: ``newest`` reads the record first."""
    table = VersionTable(store.barrier, "keys/t/", clock=ManualClock(), make_entry=lambda c, n: {})
    table.newest("auth")
    store.seal()
    with pytest.raises(SealedError):
        table.newest("auth")
