"""AlertDispatcher: dedup, rate limits, retries, the hook and the recent list.

Logic tests use ``RecordingChannel`` (a complete in-process ``AlertChannel``)
and a ``ManualClock`` for the windows; delivery tests use real peers (aiosmtpd
and http.server receivers from ``test_channels``) and real closed ports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from tests.monitor.test_channels import (
    SMTP_PASSWORD,
    WEBHOOK_SECRET,
    assert_clean,
    make_alert,
    password_check,
)

from medsecrets.clock import ManualClock
from medsecrets.errors import ConfigError
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertChannel,
    AlertDeliveryError,
    LogChannel,
    SmtpChannel,
    WebhookChannel,
    verify_webhook_signature,
)
from medsecrets.monitor.dispatcher import SUMMARY_DETECTOR, AlertDispatcher
from medsecrets.testing.receivers import HttpReceiver, SmtpSink
from medsecrets.testing.serverproc import free_port

FAST: dict[str, Any] = {"backoff": 0.001, "backoff_cap": 0.01}


class RecordingChannel:
    """An in-process channel: keeps what it was sent; fails its first ``fail`` sends."""

    def __init__(
        self,
        name: str,
        *,
        fail: int = 0,
        retryable: bool = True,
        gate: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.sent: list[Alert] = []
        self.calls = 0
        self.closed = False
        self.received = threading.Event()
        self._fail = fail
        self._retryable = retryable
        self._gate = gate

    def send(self, alert: Alert) -> None:
        self.calls += 1
        if self._gate is not None:
            self._gate.wait()
        if self.calls <= self._fail:
            raise AlertDeliveryError(f"{self.name}: HTTP 500", retryable=self._retryable)
        self.sent.append(alert)
        self.received.set()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def channel() -> RecordingChannel:
    return RecordingChannel("rec")


@pytest.fixture
def hooked() -> list[Alert]:
    return []


@pytest.fixture
def dispatcher(
    channel: RecordingChannel, clock: ManualClock, hooked: list[Alert]
) -> Iterator[AlertDispatcher]:
    d = AlertDispatcher(
        [channel],
        dedup_window=300,
        rate_per_minute=3,
        on_alert=hooked.append,
        clock=clock.monotonic,
        **FAST,
    )
    d.start()
    yield d
    assert d.stop(timeout=10)


def settle(d: AlertDispatcher) -> None:
    assert d.flush(timeout=10), "deliveries did not finish"


# --------------------------------------------------------------------------- dedup


def test_duplicates_within_the_window_are_counted_not_sent(
    dispatcher: AlertDispatcher,
    channel: RecordingChannel,
    clock: ManualClock,
    hooked: list[Alert],
) -> None:
    first = make_alert()
    dispatcher.raise_(first)
    clock.advance(100)
    dispatcher.raise_(make_alert(count=2, summary="again"))
    clock.advance(199)
    dispatcher.raise_(make_alert(time=first.time.replace(hour=13)))
    settle(dispatcher)

    assert channel.sent == [first]
    assert hooked == [first]
    (kept,) = dispatcher.recent()
    assert kept["count"] == 4
    assert kept["summary"] == first.summary
    assert kept["last_time"] == "2026-03-01T13:30:00Z"
    assert kept["delivery"] == {"rec": {"status": "sent", "attempts": 1, "error": None}}
    stats = dispatcher.stats()
    assert (stats["raised"], stats["alerts"], stats["duplicates"]) == (3, 1, 2)

    clock.advance(1)  # 300 s after the first: the window is over
    dispatcher.raise_(make_alert())
    settle(dispatcher)
    assert len(channel.sent) == 2
    assert len(hooked) == 2
    assert [a["count"] for a in dispatcher.recent()] == [1, 4]


def test_a_noted_alert_is_listed_and_deduplicated_against_but_never_sent(
    dispatcher: AlertDispatcher,
    channel: RecordingChannel,
    clock: ManualClock,
    hooked: list[Alert],
) -> None:
    """``note``: another worker delivers and audits it; here it is listed, and the same
    detector and key within the window is a duplicate, not a second delivery."""
    dispatcher.note(make_alert())
    clock.advance(10)
    dispatcher.raise_(make_alert(summary="the same condition, seen by this worker"))
    settle(dispatcher)
    assert channel.sent == []
    assert hooked == []
    (kept,) = dispatcher.recent()
    assert kept["delivered_by"] == "another worker"
    assert kept["delivery"] == {}
    assert kept["count"] == 2
    stats = dispatcher.stats()
    assert (stats["raised"], stats["alerts"], stats["duplicates"]) == (1, 0, 1)
    clock.advance(300)  # the window is over: this worker's own alert is delivered
    dispatcher.raise_(make_alert())
    settle(dispatcher)
    assert len(channel.sent) == 1
    assert "delivered_by" not in dispatcher.recent()[0]


def test_dedup_is_per_detector_and_key(
    dispatcher: AlertDispatcher, channel: RecordingChannel
) -> None:
    dispatcher.raise_(make_alert(key="alice"))
    dispatcher.raise_(make_alert(key="bob"))
    dispatcher.raise_(make_alert(key="alice", detector="bulk"))
    settle(dispatcher)
    assert [(a.detector, a.key) for a in channel.sent] == [
        ("rate", "alice"),
        ("rate", "bob"),
        ("bulk", "alice"),
    ]


# --------------------------------------------------------------------------- rate limit


def test_over_the_rate_limit_alerts_are_kept_but_not_sent(
    dispatcher: AlertDispatcher,
    channel: RecordingChannel,
    clock: ManualClock,
    hooked: list[Alert],
) -> None:
    for i in range(5):
        dispatcher.raise_(make_alert(key=f"p{i}"))
        clock.advance(1)
    settle(dispatcher)

    assert [a.key for a in channel.sent] == ["p0", "p1", "p2"]
    assert len(hooked) == 5  # every alert is audited, limited or not
    recent = dispatcher.recent()
    assert [r["key"] for r in recent] == ["p4", "p3", "p2", "p1", "p0"]
    statuses = [r["delivery"]["rec"]["status"] for r in recent]  # type: ignore[index]
    assert statuses == ["rate_limited", "rate_limited", "sent", "sent", "sent"]
    assert dispatcher.stats()["channels"] == {
        "rec": {
            "sent": 3,
            "failed": 0,
            "retries": 0,
            "rate_limited": 2,
            "dropped": 0,
            "pending": 0,
        }
    }

    clock.advance(55)  # 60 s after p0 was sent: one place is free again, for the summary
    dispatcher.raise_(make_alert(key="p5"))
    dispatcher.raise_(make_alert(key="p6"))
    settle(dispatcher)
    assert [a.key for a in channel.sent] == ["p0", "p1", "p2", "rec"]
    assert channel.sent[-1].detector == SUMMARY_DETECTOR
    assert channel.sent[-1].count == 2  # p3 and p4 (p5 and p6 wait for the next one)


def test_the_rate_limit_is_per_channel(clock: ManualClock) -> None:
    quiet, loud = RecordingChannel("quiet"), RecordingChannel("loud")
    d = AlertDispatcher([quiet, loud], rate_per_minute=1, clock=clock.monotonic)
    with d:
        d.raise_(make_alert(key="a"))
        d.raise_(make_alert(key="b"))
        settle(d)
    # each channel: its one alert, then (at stop) the summary of the one it held back
    assert [a.key for a in quiet.sent] == ["a", "quiet"]
    assert [a.key for a in loud.sent] == ["a", "loud"]
    stats = d.stats()["channels"]
    assert stats["quiet"]["rate_limited"] == stats["loud"]["rate_limited"] == 1  # type: ignore[index]


def test_the_log_channel_takes_every_alert(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """audit.md: alerts go to the log always; only the other channels are rate-limited."""
    loud = RecordingChannel("loud")
    d = AlertDispatcher([LogChannel(), loud], rate_per_minute=2, clock=clock.monotonic)
    with caplog.at_level(logging.INFO, logger="medsecrets.alerts"), d:
        for key in "abcde":
            d.raise_(make_alert(key=key))
        settle(d)
    assert len([r for r in caplog.records if r.name == "medsecrets.alerts"]) == 5
    assert [a.key for a in loud.sent] == ["a", "b", "loud"]  # the summary of 3, at stop
    assert loud.sent[-1].count == 3
    stats = d.stats()["channels"]
    assert stats["log"]["rate_limited"] == 0 and stats["loud"]["rate_limited"] == 3  # type: ignore[index]


def wait_until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``check`` until true (``seconds`` is a safety net, not a timing threshold)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


def test_critical_alerts_are_never_rate_limited(clock: ManualClock) -> None:
    """A flood of lesser alerts used to use up a channel's limit and keep a honeytoken
    read from it."""
    channel = RecordingChannel("rec")
    with AlertDispatcher([channel], rate_per_minute=1, clock=clock.monotonic) as d:
        d.raise_(make_alert(key="a", severity="low"))
        d.raise_(make_alert(key="b", severity="high"))  # over the limit
        d.raise_(make_alert(key="decoy", detector="honeytoken", severity="critical"))
        d.raise_(make_alert(key="break-glass", detector="emergency", severity="critical"))
        d.raise_(make_alert(key="c", severity="medium"))  # criticals took no place
        settle(d)
    assert [a.key for a in channel.sent] == ["a", "decoy", "break-glass", "rec"]  # + summary
    assert channel.sent[-1].count == 2
    assert d.stats()["channels"]["rec"]["rate_limited"] == 2  # type: ignore[index]


def test_rate_limited_alerts_are_summarized_once_the_window_reopens(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Rate-limited alerts no longer vanish: when the channel may send again (no further
    alert needed), it gets one summary, audited like every alert; the log, which takes
    every alert, gets none."""
    limited = RecordingChannel("rec")
    hooked: list[Alert] = []
    d = AlertDispatcher(
        [LogChannel(), limited], rate_per_minute=2, on_alert=hooked.append, clock=clock.monotonic
    )
    with caplog.at_level(logging.INFO, logger="medsecrets.alerts"), d:
        for i in range(4):
            d.raise_(make_alert(key=f"k{i}", detector="failed_burst", severity="medium"))
        d.raise_(make_alert(key="alice", detector="rate", severity="high"))
        settle(d)
        assert [a.key for a in limited.sent] == ["k0", "k1"]
        clock.advance(60)  # the window has room again
        wait_until(lambda: len(limited.sent) == 3)
        settle(d)
        d.raise_(make_alert(key="later"))  # the summary took one place, this the other
        settle(d)
    summary = limited.sent[2]
    assert [a.key for a in limited.sent] == ["k0", "k1", "rec", "later"]
    assert (summary.detector, summary.severity, summary.count) == (SUMMARY_DETECTOR, "high", 3)
    assert summary.summary == (
        "3 alerts not sent to rec (rate limit) since 2026-03-01T12:30:00Z: "
        "2 failed_burst/medium, 1 rate/high; see `medsecrets alerts list`"
    )
    assert summary.details["counts"] == {"failed_burst": {"medium": 2}, "rate": {"high": 1}}
    assert summary in hooked  # audited
    listed = [a for a in d.recent() if a["detector"] == SUMMARY_DETECTOR]
    assert [a["delivery"] for a in listed] == [
        {"rec": {"status": "sent", "attempts": 1, "error": None}}
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "medsecrets.alerts"]
    assert len(logged) == 6 and not any("rate limit" in line for line in logged)


def test_a_critical_alert_after_a_flood_reaches_a_real_webhook(clock: ManualClock) -> None:
    """The reviewer's flood: low-value alerts use up the webhook's limit; the critical
    honeytoken read still goes out, then the summary of what was held back."""
    with HttpReceiver() as receiver:
        hook = WebhookChannel(f"{receiver.base}/alerts", secret=WEBHOOK_SECRET, name="hook")
        with AlertDispatcher([hook], rate_per_minute=3, clock=clock.monotonic, **FAST) as d:
            for i in range(10):
                d.raise_(make_alert(key=f"10.0.{i}.1", detector="failed_burst", severity="medium"))
            d.raise_(make_alert(key="decoy", detector="honeytoken", severity="critical"))
            settle(d)
            clock.advance(60)
            wait_until(lambda: len(receiver.requests) == 5)
            settle(d)
        bodies = [json.loads(r.body) for r in receiver.requests]
        for request in receiver.requests:
            assert verify_webhook_signature(
                WEBHOOK_SECRET,
                request.headers[TIMESTAMP_HEADER],
                request.body,
                request.headers[SIGNATURE_HEADER],
            )
    assert [b["detector"] for b in bodies] == [*["failed_burst"] * 3, "honeytoken", "rate_limited"]
    assert bodies[-1]["count"] == 7 and "7 alerts not sent to hook" in bodies[-1]["summary"]


def test_a_summary_still_to_come_reaches_a_real_webhook_at_stop(clock: ManualClock) -> None:
    """Alerts held back in the window a server stops in are not lost with it: ``stop``
    sends their summary, audited, though the window is still full."""
    hooked: list[Alert] = []
    with HttpReceiver() as receiver:
        hook = WebhookChannel(f"{receiver.base}/alerts", secret=WEBHOOK_SECRET, name="hook")
        d = AlertDispatcher(
            [hook], rate_per_minute=2, on_alert=hooked.append, clock=clock.monotonic, **FAST
        )
        d.start()
        for i in range(5):
            d.raise_(make_alert(key=f"10.0.{i}.1", detector="failed_burst", severity="medium"))
        settle(d)
        assert len(receiver.requests) == 2  # the window is full: three held back
        assert d.stop(timeout=10)
        bodies = [json.loads(r.body) for r in receiver.requests]
    assert [b["detector"] for b in bodies] == ["failed_burst", "failed_burst", "rate_limited"]
    assert bodies[-1]["count"] == 3 and "3 alerts not sent to hook" in bodies[-1]["summary"]
    assert [a.detector for a in hooked].count(SUMMARY_DETECTOR) == 1  # audited


def test_stop_sends_no_summary_when_nothing_was_held_back(clock: ManualClock) -> None:
    channel = RecordingChannel("rec")
    d = AlertDispatcher([channel], rate_per_minute=2, clock=clock.monotonic, **FAST)
    d.start()
    for i in range(2):
        d.raise_(make_alert(key=f"k{i}"))
    settle(d)
    assert d.stop(timeout=10)
    assert [a.key for a in channel.sent] == ["k0", "k1"]


# --------------------------------------------------------------------------- retries


def test_a_failing_send_is_retried_until_it_succeeds(clock: ManualClock) -> None:
    flaky = RecordingChannel("flaky", fail=2)
    with AlertDispatcher([flaky], clock=clock.monotonic, max_attempts=4, **FAST) as d:
        d.raise_(make_alert())
        settle(d)
    assert flaky.calls == 3 and len(flaky.sent) == 1
    assert d.recent()[0]["delivery"] == {
        "flaky": {"status": "sent", "attempts": 3, "error": "flaky: HTTP 500"}
    }
    assert d.stats()["channels"]["flaky"]["retries"] == 2  # type: ignore[index]


def test_retries_stop_at_max_attempts_or_on_a_final_error(clock: ManualClock) -> None:
    down = RecordingChannel("down", fail=99)
    refused = RecordingChannel("refused", fail=99, retryable=False)
    with AlertDispatcher([down, refused], clock=clock.monotonic, max_attempts=3, **FAST) as d:
        d.raise_(make_alert())
        settle(d)
    assert (down.calls, refused.calls) == (3, 1)
    delivery = d.recent()[0]["delivery"]
    assert delivery["down"]["status"] == "failed"  # type: ignore[index]
    assert delivery["down"]["attempts"] == 3  # type: ignore[index]
    assert delivery["refused"]["attempts"] == 1  # type: ignore[index]
    assert d.stats()["channels"]["down"]["failed"] == 1  # type: ignore[index]


def test_a_hanging_channel_blocks_neither_raise_nor_the_other_channels(
    clock: ManualClock,
) -> None:
    gate = threading.Event()
    stuck = RecordingChannel("stuck", gate=gate)
    fine = RecordingChannel("fine")
    d = AlertDispatcher([stuck, fine], clock=clock.monotonic)
    d.start()
    try:
        d.raise_(make_alert(key="a"))
        d.raise_(make_alert(key="b"))  # returns although "stuck" holds alert a
        assert fine.received.wait(timeout=10)
        for _ in range(100):
            if len(fine.sent) == 2:
                break
            fine.received.clear()
            fine.received.wait(timeout=10)
        assert [a.key for a in fine.sent] == ["a", "b"]
        assert stuck.sent == []
        assert not d.flush(timeout=0.05)
        statuses = {r["key"]: r["delivery"] for r in d.recent()}
        assert statuses["a"]["stuck"]["status"] == "pending"  # type: ignore[index]
        assert statuses["a"]["fine"]["status"] == "sent"  # type: ignore[index]
        channels = d.stats()["channels"]
        assert channels["stuck"]["pending"] == 2  # type: ignore[index]  # one held, one queued
        assert channels["fine"]["pending"] == 0  # type: ignore[index]
    finally:
        gate.set()
        settle(d)
        assert d.stop(timeout=10)
    assert [a.key for a in stuck.sent] == ["a", "b"]
    assert d.stats()["channels"]["stuck"]["pending"] == 0  # type: ignore[index]


# --------------------------------------------------------------------------- hook


def test_on_alert_failure_is_logged_without_its_message(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="medsecrets")
    channel = RecordingChannel("rec")

    def broken(alert: Alert) -> None:
        raise ValueError("hunter2-would-leak")

    with AlertDispatcher([channel], on_alert=broken, clock=clock.monotonic) as d:
        d.raise_(make_alert())
        settle(d)
    assert len(channel.sent) == 1
    assert d.stats()["hook_failures"] == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "on_alert hook failed"]
    assert record.__dict__["error"] == "ValueError"
    assert "hunter2" not in caplog.text


# --------------------------------------------------------------------------- lifecycle


def test_alerts_raised_before_start_are_delivered_and_stop_closes_channels(
    clock: ManualClock, channel: RecordingChannel
) -> None:
    d = AlertDispatcher([channel], clock=clock.monotonic)
    d.raise_(make_alert())
    assert d.recent()[0]["delivery"] == {"rec": {"status": "pending", "attempts": 0, "error": None}}
    assert d.stats()["pending"] == 1
    d.start()
    d.start()
    settle(d)
    assert len(channel.sent) == 1
    assert d.stop(timeout=10)
    assert channel.closed
    d.raise_(make_alert(key="late"))  # recorded, not delivered
    assert d.recent()[0]["key"] == "late"
    assert len(channel.sent) == 1


def test_recent_is_newest_first_limited_and_bounded_by_the_ring(clock: ManualClock) -> None:
    d = AlertDispatcher([], ring_size=5, clock=clock.monotonic)
    for i in range(8):
        d.raise_(make_alert(key=f"k{i}"))
    assert [r["key"] for r in d.recent()] == ["k7", "k6", "k5", "k4", "k3"]
    assert [r["key"] for r in d.recent(2)] == ["k7", "k6"]
    assert [r["id"] for r in d.recent(2)] == [8, 7]
    json.dumps(d.recent())  # JSON-ready
    assert d.stop()


def test_a_full_queue_drops_instead_of_blocking(clock: ManualClock) -> None:
    channel = RecordingChannel("rec")
    d = AlertDispatcher([channel], queue_size=2, rate_per_minute=100, clock=clock.monotonic)
    for i in range(4):
        d.raise_(make_alert(key=f"k{i}"))
    statuses = [r["delivery"]["rec"]["status"] for r in d.recent()]  # type: ignore[index]
    assert statuses == ["dropped", "dropped", "pending", "pending"]
    assert d.stats()["channels"]["rec"]["dropped"] == 2  # type: ignore[index]
    d.start()
    settle(d)
    assert [a.key for a in channel.sent] == ["k0", "k1"]
    assert d.stop()


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"rate_per_minute": 0}, "rate_per_minute"),
        ({"dedup_window": -1}, "dedup_window"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"ring_size": 0}, "ring_size"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        AlertDispatcher([], **kwargs)


def test_channel_names_must_be_unique() -> None:
    with pytest.raises(ConfigError, match="unique"):
        AlertDispatcher([RecordingChannel("a"), RecordingChannel("a")])


# --------------------------------------------------------------------------- end to end


def test_end_to_end_real_peers_with_a_failing_receiver_and_a_closed_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SMTP + signed webhook delivered; a 500 receiver is retried; a closed port fails alone."""
    caplog.set_level(logging.DEBUG)
    sink = SmtpSink()
    smtp_port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=smtp_port,
        authenticator=password_check,
        auth_require_tls=False,
    )
    controller.start()
    audited: list[Alert] = []
    try:
        with HttpReceiver() as siem, HttpReceiver([500, 500]) as flaky:
            channels: list[AlertChannel] = [
                WebhookChannel(f"http://127.0.0.1:{free_port()}/gone", secret=WEBHOOK_SECRET,
                               name="closed", timeout=2),
                WebhookChannel(f"{flaky.base}/flaky", secret=WEBHOOK_SECRET, name="flaky"),
                WebhookChannel(f"{siem.base}/siem", secret=WEBHOOK_SECRET, name="siem"),
                SmtpChannel("127.0.0.1", smtp_port, sender="medsecrets@example.org",
                            recipients=["security@example.org"], starttls=False,
                            username="alerts", password=SMTP_PASSWORD, timeout=5),
            ]  # fmt: skip
            d = AlertDispatcher(channels, on_alert=audited.append, max_attempts=3, **FAST)
            with d:
                alert = make_alert()
                d.raise_(alert)
                d.raise_(make_alert())  # a duplicate: counted, not delivered
                settle(d)
            assert_clean(repr(d))
            (request,) = siem.requests
            assert verify_webhook_signature(
                WEBHOOK_SECRET,
                request.headers[TIMESTAMP_HEADER],
                request.body,
                request.headers[SIGNATURE_HEADER],
            )
            assert json.loads(request.body) == alert.to_dict()
            assert len(flaky.requests) == 3
    finally:
        controller.stop()

    (message,) = sink.messages
    assert message["Subject"] == "[medsecrets] high rate: alice read 51 secrets in 300 s"
    assert audited == [alert]
    (entry,) = d.recent()
    assert entry["count"] == 2
    delivery: Any = entry["delivery"]
    assert delivery["siem"] == {"status": "sent", "attempts": 1, "error": None}
    assert delivery["email"] == {"status": "sent", "attempts": 1, "error": None}
    assert delivery["flaky"]["status"] == "sent"
    assert delivery["flaky"]["attempts"] == 3
    assert delivery["closed"]["status"] == "failed"
    assert delivery["closed"]["attempts"] == 3
    assert "ConnectError" in delivery["closed"]["error"]
    assert_clean(json.dumps(d.recent()))
    assert_clean(json.dumps(d.stats()))
    assert_clean(caplog.text)
    assert "/gone" not in caplog.text and "/flaky" not in caplog.text
