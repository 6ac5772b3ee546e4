"""The shared monitor of a multi-worker server: one set of detectors over every worker.

The monitor process (``server.monitorprocess``) is run for real, fed by real
``MonitorLink``s as two workers would feed it; then a real server with two
workers shows a principal whose reads are spread over both workers caught by
the rate detector, which no worker alone could do.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from medsecrets.audit.channel import Message
from medsecrets.audit.record import AuditEvent
from medsecrets.catalog import default_catalog
from medsecrets.monitor.detectors import DetectorConfig
from medsecrets.server.auditprocess import monitor_settings
from medsecrets.server.monitorlink import LINK_ENV, LinkAddress, MonitorLink, link_from_env
from medsecrets.server.monitorprocess import MonitorProcess
from medsecrets.testing.receivers import HttpReceiver
from medsecrets.testing.serverproc import ServerProcess

DEV_SECRET = "medessence/development/database"
KEY = b"k" * 32


class Inbox:
    """What a link's monitor sent back (the alerts of the events it fed)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def noted(self) -> list[dict[str, object]]:
        with self._changed:
            return [a for m in self.messages if m[0] == "noted" for a in m[1]]  # type: ignore[attr-defined]

    def alerts(self) -> list[dict[str, object]]:
        with self._changed:
            return [a for m in self.messages if m[0] == "alerts" for a in m[1]]  # type: ignore[attr-defined]


def _wait(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout  # a safety net, not a measurement
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _read(principal: str) -> AuditEvent:
    return AuditEvent(
        kind="response",
        time=dt.datetime.now(dt.UTC),
        request_id=str(uuid.uuid4()),
        principal=principal,
        token="ms_canary-token-never-sent",
        auth="token",
        remote="10.1.2.3",
        user_agent="test",
        operation="secrets.read",
        path=DEV_SECRET,
        environment="development",
        category="database",
        status=200,
        data={"fields": {"password": "canary-value-never-sent"}},
    )


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[MonitorProcess]:
    settings = monitor_settings(
        default_catalog(),
        detectors=DetectorConfig(rate_limit=5),
        state_path=str(tmp_path / "monitor" / "detectors.state"),
    )
    process = MonitorProcess(settings, log_level="info", log_file=str(tmp_path / "monitor.log"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _link(address: LinkAddress, inbox: Inbox) -> MonitorLink:
    link = MonitorLink(address, material=lambda: KEY, on_message=inbox)
    link.start()
    return link


def test_reads_spread_over_two_links_are_counted_together(
    monitor: MonitorProcess, tmp_path: Path
) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a = _link(monitor.address, inbox_a)
    _wait(lambda: a.connected, "link a connected")
    for _ in range(3):  # each link alone stays under the limit of 5
        a.submit(_read("svc-spread"))
    a.stop()  # sends what is queued, then closes
    _wait(lambda: a._thread is not None and not a._thread.is_alive(), "link a done")
    assert (a.submitted, a.dropped) == (3, 0)
    # b connects only now, so the monitor has all of a's reads before any of b's (no
    # sleep decides the order): b's third read is the sixth, and its alert is b's.
    b = _link(monitor.address, inbox_b)
    try:
        for _ in range(3):
            b.submit(_read("svc-spread"))
        _wait(inbox_b.alerts, "the rate alert, at the link whose read made it")
        (alert,) = inbox_b.alerts()
        assert alert["detector"] == "rate"
        assert alert["key"] == "svc-spread"
        assert inbox_a.alerts() == []
    finally:
        b.stop()
    monitor.stop()  # saves the state, sealed with a key derived from the links' key
    state = (tmp_path / "monitor" / "detectors.state").read_bytes()
    assert b"svc-spread" not in state
    log = (tmp_path / "monitor.log").read_text()
    for canary in ("canary-token-never-sent", "canary-value-never-sent"):
        assert canary not in log


def test_the_other_links_are_told_of_an_alert_they_did_not_raise(
    monitor: MonitorProcess,
) -> None:
    """Every other connected worker gets the alert as ``noted`` (for ``alerts list`` and
    deduplication), not as one to deliver and audit."""
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = _link(monitor.address, inbox_a), _link(monitor.address, inbox_b)
    try:
        # a's own alert first: the monitor has then admitted a (a connection still showing
        # its cookie is not told of anything), so b's alert must reach it as noted
        for _ in range(6):
            a.submit(_read("svc-a-first"))
        _wait(inbox_a.alerts, "link a's own alert")
        for _ in range(6):
            b.submit(_read("svc-told"))
        _wait(lambda: "svc-told" in [x["key"] for x in inbox_a.noted()], "the noted alert")
        assert [x["key"] for x in inbox_b.alerts()] == ["svc-told"]
        assert "svc-told" not in [x["key"] for x in inbox_b.noted()]
        assert [x["key"] for x in inbox_a.alerts()] == ["svc-a-first"]
        assert [x["key"] for x in inbox_a.noted()] == ["svc-told"]
    finally:
        a.stop()
        b.stop()


def test_a_dead_monitor_process_is_started_again_and_the_links_reconnect(
    monitor: MonitorProcess,
) -> None:
    inbox = Inbox()
    link = _link(monitor.address, inbox)
    try:
        _wait(lambda: link.connected, "the link connected")
        first = monitor.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _wait(lambda: monitor.restarts == 1 and monitor.pid != first, "the restart")
        for _ in range(6):
            link.submit(_read("svc-after-restart"))
        _wait(inbox.alerts, "an alert from the new monitor process")
        assert [a["key"] for a in inbox.alerts()] == ["svc-after-restart"]
    finally:
        link.stop()


def test_a_connection_without_the_cookie_is_refused(monitor: MonitorProcess) -> None:
    stranger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stranger.settimeout(10)
    stranger.connect(monitor.address.socket)
    stranger.sendall(b"x" * 32)
    assert stranger.recv(1) == b""  # closed unread
    stranger.close()
    inbox = Inbox()  # and the monitor goes on serving workers
    link = _link(monitor.address, inbox)
    try:
        for _ in range(6):
            link.submit(_read("svc-after-stranger"))
        _wait(inbox.alerts, "an alert")
    finally:
        link.stop()


def test_the_link_address_comes_from_the_environment() -> None:
    address = LinkAddress("/tmp/x/monitor.sock", b"c" * 32)
    assert link_from_env({LINK_ENV: address.to_env()}) == address
    assert link_from_env({}) is None
    assert "c" * 10 not in repr(address)
    for bad in ("{", '{"socket": "/s"}', json.dumps({"socket": "/s", "cookie": "ab"})):
        with pytest.raises(ValueError, match=LINK_ENV):
            link_from_env({LINK_ENV: bad})


def _audit_records(data: Path) -> list[dict[str, object]]:
    found = []
    for path in sorted((data / "audit").glob("audit-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            record["_file"] = path.name
            found.append(record)
    return found


def test_two_workers_count_a_principal_over_both(tmp_path: Path) -> None:
    """Six reads by one principal over both workers raise the rate alert (limit 5)
    though neither worker served six; the alert is in the audit trail."""
    data = tmp_path / "data"
    env = {"MEDSECRETS_WORKERS": "2", "MEDSECRETS_MONITOR_RATE_THRESHOLD": "5"}
    with ServerProcess(data, env=env, log_dir=tmp_path / "l") as server:
        root = {"Authorization": f"Bearer {server.token}"}
        for attempt in range(8):  # until the reads landed on both workers
            name = f"spread-{attempt}"
            created = httpx.post(
                f"{server.addr}/v1/auth/token/create",
                headers=root,
                json={"paths": ["*"], "capabilities": ["read"], "ttl": 600, "display_name": name},
            )
            assert created.status_code == 200, created.text
            h = {"Authorization": f"Bearer {created.json()['token']}", "Connection": "close"}
            for _ in range(6):  # a new connection each: either worker may answer
                read = httpx.get(f"{server.addr}/v1/secrets/{DEV_SECRET}", headers=h)
                assert read.status_code == 200
            reads = [
                r
                for r in _audit_records(data)
                if r["kind"] == "response" and r["principal"] == name
            ]
            assert len(reads) == 6
            per_worker = {str(r["_file"]) for r in reads}
            if len(per_worker) == 2:
                break
        else:
            pytest.fail("every attempt's reads went to one worker")

        def alerted() -> list[object]:
            return [
                r["alert"]
                for r in _audit_records(data)
                if r["kind"] == "alert"
                and r["alert"]["detector"] == "rate"  # type: ignore[index]
                and r["alert"]["key"] == name  # type: ignore[index]
            ]

        _wait(alerted, "the rate alert in the audit trail")
        time.sleep(0.5)
        assert len(alerted()) == 1  # delivered and audited once, by one worker
        # `alerts list` shows it whichever worker answers: the other one noted it
        kinds: set[str] = set()
        for _ in range(40):  # new connections: both workers answer
            answer = httpx.get(
                f"{server.addr}/v1/sys/alerts", headers={**root, "Connection": "close"}
            )
            assert answer.status_code == 200
            (ours,) = [a for a in answer.json()["alerts"] if a["key"] == name]
            kinds.add("noted" if ours.get("delivered_by") == "another worker" else "raised")
            if kinds == {"noted", "raised"}:
                break
        assert kinds == {"noted", "raised"}
        log = server.log_text()
        assert "one monitor process watches every worker" in log
        assert "thresholds count per worker" not in log


def test_a_link_keeps_a_bounded_queue_while_the_monitor_is_away(tmp_path: Path) -> None:
    """Unreachable monitor: the link retries, keeps at most ``max_queue`` events and
    counts the rest as dropped (exported as the monitor's dropped events); once the
    monitor listens, what it kept is observed."""
    inbox = Inbox()
    settings = monitor_settings(default_catalog(), detectors=DetectorConfig(rate_limit=5))
    later = MonitorProcess(settings, log_level="warning", log_file=None)
    link = MonitorLink(later.address, material=lambda: None, on_message=inbox, max_queue=6)
    link.start()
    try:
        for _ in range(9):
            link.submit(_read("svc-queued"))
        assert (link.submitted, link.dropped) == (9, 3)
        assert not link.connected
        later.start()  # the link's next attempt finds it
        _wait(inbox.alerts, "the alert of the six kept reads")
        assert [a["key"] for a in inbox.alerts()] == ["svc-queued"]
    finally:
        link.stop()
        later.stop()


def test_restarts_keep_no_descriptor_of_the_processes_that_died(
    monitor: MonitorProcess,
) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for restarts in (1, 2, 3):
        dead = monitor.pid
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        _wait(lambda r=restarts: monitor.restarts == r, "the restart")
    assert len(os.listdir("/proc/self/fd")) == before


def test_one_worker_forgetting_its_key_does_not_stop_the_state_being_saved(
    monitor: MonitorProcess, tmp_path: Path
) -> None:
    """A worker whose storage failed says ``forget``; the others still hold the key, so the
    state is still saved at stop (it used to be the last key sent, by anyone)."""
    held: list[bytes | None] = [KEY]
    inbox_a, inbox_b = Inbox(), Inbox()
    a = _link(monitor.address, inbox_a)
    b = MonitorLink(monitor.address, material=lambda: held[0], on_message=inbox_b)
    b.start()
    try:
        for principal, link, inbox in (("svc-a", a, inbox_a), ("svc-b1", b, inbox_b)):
            for _ in range(6):
                link.submit(_read(principal))
            _wait(inbox.alerts, f"{principal}'s alert: its key and events were taken")
        held[0] = None  # b's storage fails: it sends forget before its next events
        for _ in range(6):
            b.submit(_read("svc-b2"))
        _wait(lambda: len(inbox_b.alerts()) == 2, "svc-b2's alert: the forget was taken")
    finally:
        a.stop()
        b.stop()
    state = tmp_path / "monitor" / "detectors.state"
    state.unlink(missing_ok=True)  # saved once already: only the save at stop is looked at
    monitor.stop()
    assert state.exists()


def test_a_key_left_by_a_gone_connection_does_not_outlive_the_workers_forget(
    monitor: MonitorProcess, tmp_path: Path
) -> None:
    """A worker's earlier connection (before it reconnected, or a worker that died and was
    replaced) held the key; once every connected worker says ``forget`` (an operator's
    seal), the state is no longer saved: the gone connection's key used to keep it saved."""
    held: list[bytes | None] = [KEY]
    inbox_old, inbox_b = Inbox(), Inbox()
    old = _link(monitor.address, inbox_old)
    try:
        for _ in range(6):
            old.submit(_read("svc-old"))
        _wait(inbox_old.alerts, "the old connection's key and events taken")
    finally:
        old.stop()  # its connection is gone, its key was left behind
    b = MonitorLink(monitor.address, material=lambda: held[0], on_message=inbox_b)
    b.start()
    try:
        for _ in range(6):
            b.submit(_read("svc-live1"))
        _wait(inbox_b.alerts, "the live connection's key and events taken")
        held[0] = None  # sealed: every live worker forgets
        for _ in range(6):
            b.submit(_read("svc-live2"))
        _wait(lambda: len(inbox_b.alerts()) == 2, "the forget taken")
    finally:
        b.stop()
    state = tmp_path / "monitor" / "detectors.state"
    state.unlink(missing_ok=True)
    monitor.stop()
    assert not state.exists()


def test_two_workers_send_one_alert_to_a_channel_and_list_it_once(tmp_path: Path) -> None:
    """The same detector and key raised again and again (``repeat_after = 0``, a 3 s rate
    window: six reads fit in it under load, which 1 s did not always), by the reads of both
    workers: a local webhook gets it once (the worker that
    did not deliver it had it noted and took its own for a duplicate), and each worker's
    ``GET /v1/sys/alerts`` shows it once, every raise counted."""
    with HttpReceiver() as hook:
        config = tmp_path / "server.toml"
        config.write_text(
            f"""
[monitor]
rate_threshold = 5
rate_window = 3
repeat_after = 0

[[alerts.channel]]
type = "webhook"
url = "{hook.base}/alerts"
secret = "shared-monitor-webhook-secret-01"
""",
            encoding="utf-8",
        )
        config.chmod(0o600)
        data = tmp_path / "data"
        env = {"MEDSECRETS_WORKERS": "2"}
        args = ["--config", str(config)]
        with ServerProcess(data, env=env, extra_args=args, log_dir=tmp_path / "l") as server:
            root = {"Authorization": f"Bearer {server.token}"}
            created = httpx.post(
                f"{server.addr}/v1/auth/token/create",
                headers=root,
                json={"paths": ["*"], "capabilities": ["read"], "ttl": 600, "display_name": "p"},
            )
            assert created.status_code == 200, created.text
            h = {"Authorization": f"Bearer {created.json()['token']}", "Connection": "close"}
            raisers: list[str] = []  # the request id of each round's sixth read
            for _ in range(12):  # until the raising reads landed on both workers
                time.sleep(3.1)  # the rate window (by the events' time) is over
                for _ in range(6):  # a new connection each: either worker may answer
                    read = httpx.get(f"{server.addr}/v1/secrets/{DEV_SECRET}", headers=h)
                    assert read.status_code == 200, read.text
                raisers.append(read.headers["x-request-id"])
                files = {
                    str(r["_file"])
                    for r in _audit_records(data)
                    if r["kind"] == "response" and r["request_id"] in raisers
                }
                if len(files) == 2:
                    break
            else:
                pytest.fail("every raising read went to one worker")
            rounds = len(raisers)

            def listed() -> set[tuple[int, ...]]:
                """Each answering worker's counts of the alerts of key ``p``."""
                found = set()
                for _ in range(20):  # new connections: both workers answer
                    answer = httpx.get(
                        f"{server.addr}/v1/sys/alerts", headers={**root, "Connection": "close"}
                    )
                    assert answer.status_code == 200
                    found.add(tuple(a["count"] for a in answer.json()["alerts"] if a["key"] == "p"))
                return found

            _wait(lambda: listed() == {(6 * rounds,)}, "every raise counted on both workers")
            _wait(lambda: hook.requests, "the webhook delivery")
        bodies = [json.loads(r.body) for r in hook.requests]
        assert [(b["detector"], b["key"]) for b in bodies] == [("rate", "p")]
