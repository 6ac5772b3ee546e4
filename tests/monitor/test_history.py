"""The dispatcher's recent alerts across restarts (``AlertDispatcher.restore``,
``monitor.history.AlertHistory``).

A dispatcher raises alerts and its history is saved; a new dispatcher (the next run)
restores it: ``recent()`` shows this run's alerts first, then the earlier ones as they
were last seen, and ids go on after theirs. Nothing is read or written while sealed; an
edited file is refused and the list starts empty; the file is sealed (no principal in
clear).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path

import anyio.from_thread
import httpx
import pytest
from tests.monitor.test_channels import make_alert, outcome_within
from tests.monitor.test_dispatcher import RecordingChannel

from medsecrets.api import create_app
from medsecrets.audit.keys import BarrierKeySource
from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.core import Core
from medsecrets.monitor.dispatcher import AlertDispatcher
from medsecrets.monitor.history import MAGIC, AlertHistory
from medsecrets.server.auditsetup import AuditStack
from medsecrets.store import SecretStore

KEY = b"h" * 32


def _run(path: Path, keys: list[bytes | None], *alerts: str) -> AlertDispatcher:
    """One server run: a dispatcher, its history restored, ``alerts`` raised (each its own
    key, so none is a duplicate) and saved as the server does after each one."""
    dispatcher = AlertDispatcher([RecordingChannel("log")])
    history = AlertHistory(dispatcher, path, lambda: keys[0])
    history.restore()
    dispatcher.start()
    for key in alerts:
        dispatcher.raise_(make_alert(key=key, summary=f"alert {key}"))
        history.save()
    assert dispatcher.stop(5.0)
    history.save(force=True)
    return dispatcher


def _saved(path: Path) -> list[object]:
    """The summaries of the alerts saved at ``path``, as the next run lists them."""
    again = AlertDispatcher([RecordingChannel("log")])
    AlertHistory(again, path, lambda: KEY).restore()
    return [a["summary"] for a in again.recent(10)]


def test_the_recent_alerts_outlive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "monitor" / "alerts.state"
    first = _run(path, [KEY], "a", "b")
    before = first.recent(10)
    assert [a["summary"] for a in before] == ["alert b", "alert a"]
    assert b"alice" not in path.read_bytes() and path.read_bytes().startswith(MAGIC)

    second = _run(path, [KEY], "c")
    after = second.recent(10)
    assert [a["summary"] for a in after] == ["alert c", "alert b", "alert a"]
    assert after[1:] == before  # as last seen: counts and deliveries too
    assert after[0]["id"] > max(a["id"] for a in before)  # type: ignore[operator, type-var]
    assert second.recent(2) == after[:2]

    third = _run(path, [KEY])
    assert third.recent(10) == after  # a run that raised nothing keeps the list


def test_nothing_is_read_or_written_while_sealed(tmp_path: Path) -> None:
    path = tmp_path / "alerts.state"
    _run(path, [None], "a")
    assert not path.exists()
    _run(path, [KEY], "b")
    keys: list[bytes | None] = [None]
    dispatcher = AlertDispatcher([RecordingChannel("log")])
    history = AlertHistory(dispatcher, path, lambda: keys[0])
    history.restore()
    assert dispatcher.recent(10) == []
    keys[0] = KEY  # unsealed: the next call restores
    history.restore()
    assert [a["summary"] for a in dispatcher.recent(10)] == ["alert b"]


def test_an_edited_history_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alerts.state"
    _run(path, [KEY], "a")
    data = path.read_bytes()
    at = len(MAGIC) + 30
    path.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    with caplog.at_level(logging.WARNING, logger="medsecrets.monitor"):
        dispatcher = _run(path, [KEY], "b")
    assert "alert history" in caplog.text and "cannot be authenticated" in caplog.text
    assert [a["summary"] for a in dispatcher.recent(10)] == ["alert b"]


def test_restore_keeps_what_it_can_show(tmp_path: Path) -> None:
    dispatcher = AlertDispatcher([RecordingChannel("log")], ring_size=3)
    dispatcher.restore(
        [{"id": 9, "summary": "x"}, "junk", {"id": "7"}, {"id": 5}, {"id": 4}, {"id": 3}]  # type: ignore[list-item]
    )
    assert [a["id"] for a in dispatcher.recent(10)] == [9, 5, 4]
    dispatcher.start()
    dispatcher.raise_(make_alert())
    assert dispatcher.stop(5.0)
    assert [a["id"] for a in dispatcher.recent(10)][:2] == [10, 9]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_saves_are_at_most_one_a_second_and_forced_at_stop(tmp_path: Path) -> None:
    path = tmp_path / "alerts.state"
    clock = _Clock()
    dispatcher = AlertDispatcher([RecordingChannel("log")])
    history = AlertHistory(dispatcher, path, lambda: KEY, every=1.0, clock=clock)

    dispatcher.raise_(make_alert(key="a", summary="a"))
    history.save()
    dispatcher.raise_(make_alert(key="b", summary="b"))
    clock.now = 0.5
    history.save()  # within a second of the last: skipped
    assert _saved(path) == ["a"]
    clock.now = 1.0
    history.save()
    assert _saved(path) == ["b", "a"]
    dispatcher.raise_(make_alert(key="c", summary="c"))
    history.save(force=True)
    assert _saved(path) == ["c", "b", "a"]


def test_alerts_raised_before_the_restore_are_numbered_after_it(tmp_path: Path) -> None:
    """The server restores lazily (at the first save or list once unsealed): an alert
    raised before that is renumbered after the restored ids, in order."""
    path = tmp_path / "alerts.state"
    _run(path, [KEY], "a", "b")
    dispatcher = AlertDispatcher([RecordingChannel("log")])
    dispatcher.raise_(make_alert(key="c", summary="alert c"))
    dispatcher.raise_(make_alert(key="d", summary="alert d"))
    history = AlertHistory(dispatcher, path, lambda: KEY)
    history.save(force=True)  # restores first: never writes over a history not yet read
    listed = dispatcher.recent(10)
    assert [a["summary"] for a in listed] == ["alert d", "alert c", "alert b", "alert a"]
    ids = [a["id"] for a in listed]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4  # type: ignore[type-var]
    again = AlertDispatcher([RecordingChannel("log")])
    AlertHistory(again, path, lambda: KEY).restore()
    assert [(a["id"], a["summary"]) for a in again.recent(10)] == [
        (a["id"], a["summary"]) for a in listed
    ]


def test_a_delivery_cut_short_shows_as_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "alerts.state"
    gate = threading.Event()
    dispatcher = AlertDispatcher([RecordingChannel("slack", gate=gate)])
    history = AlertHistory(dispatcher, path, lambda: KEY)
    dispatcher.start()
    dispatcher.raise_(make_alert())
    history.save(force=True)  # the send is still waiting at the gate: pending
    gate.set()
    assert dispatcher.stop(5.0)
    again = AlertDispatcher([RecordingChannel("slack")])
    AlertHistory(again, path, lambda: KEY).restore()
    (alert,) = again.recent(10)
    assert alert["delivery"]["slack"]["status"] == "interrupted"  # type: ignore[index]


def test_the_saver_thread_coalesces_and_never_drops_the_last_change(tmp_path: Path) -> None:
    """``changed()`` returns at once; a change that comes while the thread waits out its
    period is saved at the end of it (no later call needed), and ``stop`` saves."""
    path = tmp_path / "alerts.state"
    (tmp_path / ".alerts.state.left-by-a-crash").write_text("x")
    dispatcher = AlertDispatcher([RecordingChannel("log")])
    history = AlertHistory(dispatcher, path, lambda: KEY, every=0.3)
    history.start()

    dispatcher.raise_(make_alert(key="a", summary="a"))
    history.changed()
    deadline = time.monotonic() + 30  # a safety net, not a timing threshold
    while _saved(path) != ["a"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    dispatcher.raise_(make_alert(key="b", summary="b"))
    history.changed()  # within the period: saved when it ends
    while _saved(path) != ["b", "a"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    dispatcher.raise_(make_alert(key="c", summary="c"))
    history.stop()
    assert _saved(path) == ["c", "b", "a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alerts.state"]  # stale temp gone


def test_deliveries_that_end_during_a_save_are_saved_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer's crash test: deliveries that finished while a save was being written
    showed as ``interrupted`` after a SIGKILL. The saver asks whether any is pending
    before it snapshots, so such a save is followed by another."""
    path = tmp_path / "alerts.state"
    gate = threading.Event()
    dispatcher = AlertDispatcher([RecordingChannel("slack", gate=gate)])
    history = AlertHistory(dispatcher, path, lambda: KEY, every=0.05)
    store = history._store

    def store_then_deliver(key: bytes) -> None:
        store(key)  # the snapshot shows the delivery pending...
        if not gate.is_set():
            gate.set()  # ... and it ends before the saver looks again
            deadline = time.monotonic() + 30  # a safety net, not a timing threshold
            while dispatcher.stats()["pending"]:
                assert time.monotonic() < deadline
                time.sleep(0.01)

    monkeypatch.setattr(history, "_store", store_then_deliver)
    dispatcher.start()
    history.start()
    dispatcher.raise_(make_alert())
    history.changed()

    def status() -> object:
        again = AlertDispatcher([RecordingChannel("slack")])
        AlertHistory(again, path, lambda: KEY).restore()
        found = again.recent(10)
        return found[0]["delivery"]["slack"]["status"] if found else None  # type: ignore[index]

    deadline = time.monotonic() + 30  # a safety net, not a timing threshold
    while status() != "sent":  # saved again by the thread, not by stop()
        assert time.monotonic() < deadline, status()
        time.sleep(0.05)
    history.stop()
    assert dispatcher.stop(5.0)


def test_a_save_being_written_never_holds_up_the_alert_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer's slow disk: ``alerts list`` (``restore`` then ``recent``) waited for the
    keeper's lock, held through a save's write and fsync. Now it takes no lock once
    restored, a save that is not due returns at once, and writes stay one at a time."""
    dispatcher = AlertDispatcher([RecordingChannel("log")])
    dispatcher.raise_(make_alert(summary="listed"))
    history = AlertHistory(dispatcher, tmp_path / "alerts.state", lambda: KEY, every=60)
    history.restore()
    disk = threading.Event()  # the slow disk lets the write through
    writing = threading.Event()
    active: list[int] = [0, 0]  # writes in progress, most at once
    lock = threading.Lock()
    store = history._store

    def slow_store(key: bytes) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active)
        writing.set()
        disk.wait(10)
        store(key)
        with lock:
            active[0] -= 1

    monkeypatch.setattr(history, "_store", slow_store)
    savers = [threading.Thread(target=history.save, kwargs={"force": True}) for _ in range(2)]
    savers[0].start()
    try:
        assert writing.wait(10)
        listed: list[dict[str, object]] = []

        def list_alerts() -> None:  # what ``alerts list`` does
            history.restore()
            listed.extend(dispatcher.recent(5))

        assert outcome_within(list_alerts, 5) is None
        assert [a["summary"] for a in listed] == ["listed"]
        assert outcome_within(history.save, 5) is None  # not due: no wait for the disk
        savers[1].start()  # forced: written after the first, never at the same time
    finally:
        disk.set()
        for saver in savers:
            if saver.is_alive() or saver.ident is not None:
                saver.join(10)
    assert history.saves == 2 and active == [0, 1]


def test_the_alerts_route_runs_off_the_event_loop(
    tmp_path: Path, store: SecretStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GET /v1/sys/alerts`` ran on the event loop: its first restore (a file read and
    decrypted), or a wait for the history, held every other request. It runs in the
    thread pool now: a health check is answered while it is held."""
    dispatcher = AlertDispatcher([RecordingChannel("log")])
    history = AlertHistory(dispatcher, tmp_path / "alerts.state", lambda: KEY)
    disk, reading = threading.Event(), threading.Event()

    def slow_load(key: bytes) -> None:
        reading.set()
        disk.wait(10)

    monkeypatch.setattr(history, "_load", slow_load)
    stack = AuditStack(
        broker=None,
        keys=BarrierKeySource(store.barrier),
        node="n1",
        dispatcher=dispatcher,
        history=history,
    )
    tokens = TokenStore(store.barrier, clock=clock)
    root = tokens.create_root()[0].reveal()
    app = create_app(Core(store, tokens, admin=stack))
    with anyio.from_thread.start_blocking_portal() as portal:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4242))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

        def get(url: str, **kw: object) -> httpx.Response:
            return portal.call(functools.partial(client.get, url, **kw))  # type: ignore[arg-type, call-arg]

        answers: dict[str, int] = {}

        def list_alerts() -> None:
            auth = {"Authorization": f"Bearer {root}"}
            answers["alerts"] = get("/v1/sys/alerts", headers=auth).status_code

        def check_health() -> None:
            answers["health"] = get("/v1/sys/health").status_code

        listing = threading.Thread(target=list_alerts)
        listing.start()
        try:
            assert reading.wait(10)
            assert outcome_within(check_health, 5) is None
        finally:
            disk.set()
            listing.join(10)
        portal.call(client.aclose)
    assert answers == {"health": 200, "alerts": 200}
