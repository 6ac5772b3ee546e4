"""Alert channels against real local peers: http.server receivers and an aiosmtpd server."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from tests.support.peers import EndlessAnswer, RawPeer

from medsecrets.clock import ManualClock
from medsecrets.errors import ConfigError
from medsecrets.logs import JsonFormatter
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertChannel,
    AlertDeliveryError,
    LogChannel,
    SlackChannel,
    SmtpChannel,
    WebhookChannel,
    redact_url,
    sign_webhook,
    verify_webhook_signature,
)
from medsecrets.sensitive import Sensitive
from medsecrets.testing.receivers import HttpReceiver, SmtpSink
from medsecrets.testing.serverproc import free_port, write_test_certificates

SLACK_TOKEN = "T0AAA/B0BBB/xoxbSlackPathToken42"
WEBHOOK_SECRET = b"whsec-0123456789-abcdef-canary"
SMTP_PASSWORD = "smtp-pa55word-canary"


def make_alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "detector": "rate",
        "severity": "high",
        "time": dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC),
        "summary": "alice read 51 secrets in 300 s",
        "key": "alice",
        "principal": "alice",
        "source": "10.0.0.7",
        "path": "medessence/prod/database/main",
        "category": "database",
        "environment": "prod",
        "details": {"threshold": 50, "window_s": 300},
    }
    fields.update(overrides)
    return Alert(**fields)


# --------------------------------------------------------------------------- receivers


def password_check(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"alerts"
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


@pytest.fixture
def smtp_server() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        authenticator=password_check,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


class DripServer(RawPeer):
    """A raw TCP peer that sends ``payload`` one byte every ``every`` seconds, without end
    (each read of the client gets data in time, so no per-read timeout fires): an HTTP
    receiver dripping its status line (``read_first``: after reading the request) or an
    SMTP server dripping a multi-line banner."""

    def __init__(self, payload: bytes, *, read_first: bool, every: float = 0.05) -> None:
        self.payload = payload
        self.read_first = read_first
        self.every = every
        self.closed = threading.Event()  # the client hung up (or the drip failed)
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.read_first:
                conn.recv(65536)
            at = 0
            while not self.stopping.wait(self.every):
                conn.sendall(self.payload[at % len(self.payload) :][:1])
                at += 1
        self.closed.set()


@contextlib.contextmanager
def drip_server(payload: bytes, *, read_first: bool) -> Iterator[DripServer]:
    server = DripServer(payload, read_first=read_first)
    try:
        yield server
    finally:
        server.stop()


def outcome_within(send: Callable[[], None], seconds: float = 10.0) -> BaseException | None:
    """What ``send()`` raised (``None``: it returned), asserting it ended within ``seconds``
    (a safety net for a stalled send, not a timing threshold)."""
    found: list[BaseException | None] = []

    def run() -> None:
        try:
            send()
        except BaseException as exc:
            found.append(exc)
        else:
            found.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the send never ended"
    return found[0]


def assert_clean(text: str) -> None:
    """No credential in any of its usual encodings."""
    for canary in (SLACK_TOKEN, "xoxbSlackPathToken42", SMTP_PASSWORD):
        assert canary not in text
    assert WEBHOOK_SECRET.decode() not in text
    assert WEBHOOK_SECRET.hex() not in text


# --------------------------------------------------------------------------- slack


def test_slack_posts_a_mrkdwn_section_with_the_alert_facts(
    receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # ``log_json`` (another test, in the same process) keeps httpx at WARNING: ask for it
    caplog.set_level(logging.DEBUG, logger="httpx")
    channel = SlackChannel(f"{receiver.base}/services/{SLACK_TOKEN}", timeout=5)
    assert isinstance(channel, AlertChannel)
    try:
        channel.send(make_alert())
    finally:
        channel.close()

    (request,) = receiver.requests
    assert request.path == f"/services/{SLACK_TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    payload = json.loads(request.body)
    assert payload["text"] == "[medsecrets] high rate: alice read 51 secrets in 300 s"
    (block,) = payload["blocks"]
    assert block["type"] == "section"
    assert block["text"]["type"] == "mrkdwn"
    text = block["text"]["text"]
    for fact in (
        "high",
        "*Detector:* rate",
        "*Summary:* alice read 51 secrets in 300 s",
        "*Principal:* alice",
        "*Source:* 10.0.0.7",
        "*Path:* medessence/prod/database/main",
    ):
        assert fact in text
    # httpx logs every request URL at INFO: the Slack token must not be in it.
    assert any(r.name == "httpx" for r in caplog.records)
    assert_clean(caplog.text)
    assert_clean(repr(channel))
    assert redact_url(receiver.base + "/x") in repr(channel)


def test_slack_escapes_mrkdwn_control_characters(receiver: HttpReceiver) -> None:
    channel = SlackChannel(Sensitive(f"{receiver.base}/hook"))
    channel.send(make_alert(summary="<!channel> & <@U123>"))
    channel.close()
    payload = json.loads(receiver.requests[0].body)
    assert "<" not in payload["blocks"][0]["text"]["text"]
    assert "&lt;!channel&gt; &amp; &lt;@U123&gt;" in payload["blocks"][0]["text"]["text"]
    assert "<!channel>" not in payload["text"]


def test_http_failures_raise_with_a_redacted_target_and_retry_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with HttpReceiver([500, 404, 429]) as failing:
        channel = SlackChannel(f"{failing.base}/services/{SLACK_TOKEN}")
        expected = [("HTTP 500", True), ("HTTP 404", False), ("HTTP 429", True)]
        for status, retryable in expected:
            with pytest.raises(AlertDeliveryError) as info:
                channel.send(make_alert())
            assert status in str(info.value)
            assert info.value.retryable is retryable
            assert f"{failing.base}/***" in str(info.value)
            assert_clean(str(info.value))
        channel.close()
    assert_clean(caplog.text)


def test_closed_port_raises_a_retryable_error_without_the_url_path() -> None:
    channel = SlackChannel(f"http://127.0.0.1:{free_port()}/services/{SLACK_TOKEN}", timeout=2)
    with pytest.raises(AlertDeliveryError) as info:
        channel.send(make_alert())
    channel.close()
    assert info.value.retryable
    assert "ConnectError" in str(info.value)
    assert_clean(str(info.value))
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_an_endless_answer_is_read_only_in_part() -> None:
    """A receiver answering 200 with an endless body: the status counts, the body is not
    read beyond a few KiB (it used to be read into memory for as long as it came)."""
    endless = EndlessAnswer(drip=False)
    try:
        channel = WebhookChannel(f"{endless.url}/{SLACK_TOKEN}", secret=WEBHOOK_SECRET, timeout=5)
        assert outcome_within(lambda: channel.send(make_alert())) is None
        channel.close()
    finally:
        endless.stop()
    assert endless.posts == 1


def test_a_dripping_receiver_fails_the_attempt_at_its_deadline() -> None:
    """A receiver dripping its status line a byte at a time (each read in time): the attempt
    ends after ``timeout`` seconds in all, as a retryable timeout."""
    with drip_server(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 10_000, read_first=True) as peer:
        channel = SlackChannel(f"http://127.0.0.1:{peer.port}/services/{SLACK_TOKEN}", timeout=0.5)
        error = outcome_within(lambda: channel.send(make_alert()))
        channel.close()
        assert peer.closed.wait(5)  # the connection was cut, not left open
    assert isinstance(error, AlertDeliveryError)
    assert "timed out" in str(error) and error.retryable
    assert_clean(str(error))


def test_a_closed_channel_refuses_to_send(receiver: HttpReceiver) -> None:
    channel = SlackChannel(f"{receiver.base}/hook")
    channel.close()
    channel.close()
    with pytest.raises(AlertDeliveryError, match="closed"):
        channel.send(make_alert())
    assert receiver.requests == []


# --------------------------------------------------------------------------- webhook


def test_webhook_body_is_the_alert_dict_and_the_signature_verifies(
    receiver: HttpReceiver,
) -> None:
    clock = ManualClock(dt.datetime(2026, 3, 1, 12, 31, tzinfo=dt.UTC))
    channel = WebhookChannel(
        f"{receiver.base}/siem/alerts", secret=WEBHOOK_SECRET, timeout=5, clock=clock
    )
    alert = make_alert()
    channel.send(alert)
    channel.close()

    (request,) = receiver.requests
    assert request.path == "/siem/alerts"
    assert json.loads(request.body) == alert.to_dict()
    timestamp = request.headers[TIMESTAMP_HEADER]
    signature = request.headers[SIGNATURE_HEADER]
    now = clock.now().timestamp()
    assert timestamp == str(int(now))
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert signature == sign_webhook(WEBHOOK_SECRET, timestamp, request.body)

    assert verify_webhook_signature(WEBHOOK_SECRET, timestamp, request.body, signature, now=now)
    assert verify_webhook_signature(
        Sensitive(WEBHOOK_SECRET), int(timestamp), request.body, signature, now=now + 300
    )
    tampered = request.body.replace(b"alice", b"mallory")
    assert tampered != request.body
    assert not verify_webhook_signature(WEBHOOK_SECRET, timestamp, tampered, signature, now=now)
    assert not verify_webhook_signature(
        b"another-secret-of-16+", timestamp, request.body, signature, now=now
    )
    # the timestamp is bound into the MAC: a replay with a fresh timestamp fails
    assert not verify_webhook_signature(
        WEBHOOK_SECRET, str(int(now) + 10), request.body, signature, now=now + 10
    )
    assert not verify_webhook_signature(
        WEBHOOK_SECRET, timestamp, request.body, signature, now=now + 301
    )
    assert not verify_webhook_signature(
        WEBHOOK_SECRET, "not-a-number", request.body, signature, now=now
    )


def test_a_signature_verifies_under_one_spelling_of_its_headers_only() -> None:
    """A receiver's (timestamp, signature) replay cache used to miss a captured delivery
    sent again with another spelling of the same timestamp or signature."""
    body = b'{"detector":"honeytoken"}'
    now = 1_796_473_711
    timestamp = str(now)
    signature = sign_webhook(WEBHOOK_SECRET, timestamp, body)
    assert verify_webhook_signature(WEBHOOK_SECRET, timestamp, body, signature, now=now)
    assert verify_webhook_signature(WEBHOOK_SECRET, now, body, signature, now=now)
    arabic_indic = "".join(chr(0x660 + int(c)) for c in timestamp)
    for other in (
        f"+{timestamp}",
        f"0{timestamp}",
        f" {timestamp}",
        f"{timestamp}\n",
        f"{timestamp[:4]}_{timestamp[4:]}",
        arabic_indic,
        f"{timestamp}.0",
        "",
    ):
        assert not verify_webhook_signature(WEBHOOK_SECRET, other, body, signature, now=now)
        # not even when signed over that spelling: only canonical timestamps verify
        resigned = sign_webhook(WEBHOOK_SECRET, other, body)
        assert not verify_webhook_signature(WEBHOOK_SECRET, other, body, resigned, now=now)
    for other in (f" {signature}", f"{signature}\t", signature.upper(), signature[:-1]):
        assert not verify_webhook_signature(WEBHOOK_SECRET, timestamp, body, other, now=now)
    assert not verify_webhook_signature(WEBHOOK_SECRET, -now, body, signature, now=now)


def test_webhook_never_shows_its_secret_or_url_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with HttpReceiver([503]) as failing:
        channel = WebhookChannel(f"{failing.base}/in/{SLACK_TOKEN}", secret=WEBHOOK_SECRET)
        with pytest.raises(AlertDeliveryError) as info:
            channel.send(make_alert())
        channel.close()
    for text in (repr(channel), str(info.value), repr(info.value), caplog.text):
        assert_clean(text)
    assert "WebhookChannel(name='webhook'" in repr(channel)


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: WebhookChannel("http://127.0.0.1/x", secret=b"short"), "webhook secret"),
        (lambda: WebhookChannel("ftp://h/x", secret=WEBHOOK_SECRET), "webhook url"),
        (lambda: SlackChannel("hooks.slack.com/services/x"), "slack webhook_url"),
        (lambda: SlackChannel("https://hooks.slack.com/x", timeout=0), "timeout"),
        # plain http only to a loopback host: a Slack URL's path is its token
        (
            lambda: SlackChannel(f"http://hooks.slack.com/services/{SLACK_TOKEN}"),
            "slack webhook_url",
        ),
        (lambda: WebhookChannel("http://soc.example/in", secret=WEBHOOK_SECRET), "webhook url"),
        (lambda: WebhookChannel("http://10.0.0.7/in", secret=WEBHOOK_SECRET), "webhook url"),
        (
            lambda: SmtpChannel(
                "smtp.example.org",
                587,
                sender="a@example.org",
                recipients=["b@example.org"],
                starttls=False,
                username="u",
                password=SMTP_PASSWORD,
            ),
            "smtp starttls",
        ),
        (
            lambda: SmtpChannel("h", 25, sender="a@example.org", recipients=[]),
            "smtp recipients",
        ),
        (
            lambda: SmtpChannel("h", 25, sender="a@example.org", recipients=["b@x"], username="u"),
            "smtp username/password",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(build: Any, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert setting in str(info.value)
    assert_clean(str(info.value))


def test_redact_url() -> None:
    assert redact_url("https://hooks.slack.com/services/T/B/x") == "https://hooks.slack.com/***"
    assert redact_url("https://user:pw@h.example:8443/a?token=1") == "https://h.example:8443/***"
    assert redact_url("http://h.example?sig=abc") == "http://h.example/***"
    assert redact_url("http://h.example/") == "http://h.example"


# --------------------------------------------------------------------------- smtp


def test_smtp_sends_a_readable_email_after_login(
    smtp_server: tuple[SmtpSink, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink, port = smtp_server
    channel = SmtpChannel(
        "127.0.0.1",
        port,
        sender="medsecrets@example.org",
        recipients=["security@example.org", "oncall@example.org"],
        starttls=False,
        username="alerts",
        password=Sensitive(SMTP_PASSWORD),
        timeout=5,
    )
    assert isinstance(channel, AlertChannel)
    channel.send(make_alert())
    channel.close()

    (message,) = sink.messages
    assert message["Subject"] == "[medsecrets] high rate: alice read 51 secrets in 300 s"
    assert message["From"] == "medsecrets@example.org"
    assert sink.envelopes == [
        ("medsecrets@example.org", ["security@example.org", "oncall@example.org"])
    ]
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    for fact in (
        "alice read 51 secrets in 300 s",
        "Principal:   alice",
        "Source:      10.0.0.7",
        "Path:        medessence/prod/database/main",
        "Detector:    rate",
        "threshold: 50",
    ):
        assert fact in body
    assert_clean(message.as_string())
    assert_clean(repr(channel))
    assert_clean(caplog.text)
    assert "username='alerts'" in repr(channel)


def test_smtp_refused_login_is_final_and_shows_no_password(
    smtp_server: tuple[SmtpSink, int],
) -> None:
    sink, port = smtp_server
    channel = SmtpChannel(
        "127.0.0.1",
        port,
        sender="medsecrets@example.org",
        recipients=["security@example.org"],
        starttls=False,
        username="alerts",
        password="wrong-" + SMTP_PASSWORD,
    )
    with pytest.raises(AlertDeliveryError) as info:
        channel.send(make_alert())
    assert "login refused (SMTP 535)" in str(info.value)
    assert info.value.retryable is False
    assert SMTP_PASSWORD not in repr(channel) and SMTP_PASSWORD not in str(info.value)
    assert sink.messages == []


def test_smtp_closed_port_is_a_retryable_failure() -> None:
    channel = SmtpChannel(
        "127.0.0.1", free_port(), sender="a@example.org", recipients=["b@example.org"],
        starttls=False, timeout=2,
    )  # fmt: skip
    with pytest.raises(AlertDeliveryError) as info:
        channel.send(make_alert())
    assert info.value.retryable
    assert "ConnectionRefusedError" in str(info.value)


def test_smtp_starttls_verifies_the_server_and_then_logs_in(tmp_path: Path) -> None:
    certs = write_test_certificates(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.cert_file, certs.key_file)
    sink = SmtpSink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_ctx,
        require_starttls=True,
        authenticator=password_check,
    )
    controller.start()
    try:
        plain = SmtpChannel(
            "127.0.0.1", port, sender="a@example.org", recipients=["b@example.org"],
            starttls=False,
        )  # fmt: skip
        with pytest.raises(AlertDeliveryError, match="SMTP 530"):
            plain.send(make_alert())

        untrusted = SmtpChannel(
            "127.0.0.1", port, sender="a@example.org", recipients=["b@example.org"],
            starttls=True, username="alerts", password=SMTP_PASSWORD,
        )  # fmt: skip
        with pytest.raises(AlertDeliveryError, match="SSLCertVerificationError"):
            untrusted.send(make_alert())

        client_ctx = ssl.create_default_context(cafile=certs.ca_file)
        channel = SmtpChannel(
            "127.0.0.1", port, sender="a@example.org", recipients=["b@example.org"],
            starttls=True, username="alerts", password=SMTP_PASSWORD, ssl_context=client_ctx,
        )  # fmt: skip
        channel.send(make_alert(severity="critical", detector="honeytoken", summary="decoy read"))
    finally:
        controller.stop()
    (message,) = sink.messages
    assert message["Subject"] == "[medsecrets] critical honeytoken: decoy read"


def test_a_dripping_smtp_server_fails_the_attempt_at_its_deadline() -> None:
    """A server dripping a multi-line ``220-`` banner (each read in time): the session ends
    after ``timeout`` seconds in all, as a retryable timeout."""
    with drip_server(b"220-" + b"a" * 10_000, read_first=False) as peer:
        channel = SmtpChannel(
            "127.0.0.1", peer.port, sender="a@example.org", recipients=["b@example.org"],
            starttls=False, timeout=0.5,
        )  # fmt: skip
        error = outcome_within(lambda: channel.send(make_alert()))
        assert peer.closed.wait(5)
    assert isinstance(error, AlertDeliveryError)
    assert "timed out" in str(error) and error.retryable


class DripsOverTls(RawPeer):
    """An SMTP server that offers STARTTLS, upgrades the session, then drips its EHLO
    answer over TLS a byte at a time: the drip comes after smtplib wrapped (and detached)
    the session's socket."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self.tls = tls
        self.upgraded = threading.Event()
        self.closed = threading.Event()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            reader = conn.makefile("rb")
            conn.sendall(b"220 mx.example.org ESMTP\r\n")
            reader.readline()  # EHLO
            conn.sendall(b"250-mx.example.org\r\n250 STARTTLS\r\n")
            reader.readline()  # STARTTLS
            conn.sendall(b"220 go ahead\r\n")
            with self.tls.wrap_socket(conn, server_side=True) as tls:
                self.upgraded.set()
                tls.recv(1024)  # EHLO again
                answer = b"250-" + b"a" * 10_000
                for at in range(len(answer)):
                    if self.stopping.wait(0.05):
                        break
                    tls.sendall(answer[at : at + 1])
        self.closed.set()


def test_a_drip_after_starttls_is_cut_at_the_deadline(tmp_path: Path) -> None:
    certs = write_test_certificates(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs.cert_file, certs.key_file)
    client_tls = ssl.create_default_context(cafile=certs.ca_file)
    peer = DripsOverTls(server_tls)
    try:  # 5 s: the upgrade's handshake in time on a loaded machine, the drip takes 500 s
        channel = SmtpChannel(
            "127.0.0.1", peer.port, sender="a@example.org", recipients=["b@example.org"],
            starttls=True, timeout=5.0, ssl_context=client_tls,
        )  # fmt: skip
        error = outcome_within(lambda: channel.send(make_alert()))
        assert peer.upgraded.is_set()
        assert peer.closed.wait(5)
    finally:
        peer.stop()
    assert isinstance(error, AlertDeliveryError)
    assert "timed out" in str(error) and error.retryable


class RefusingSink(SmtpSink):
    """Refuses recipients by their local part: ``nobody`` for good (550), ``busy`` for now
    (450)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@"):
            return "450 4.2.1 mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def refusing() -> Iterator[tuple[RefusingSink, int]]:
    sink = RefusingSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("recipients", "message", "retryable"),
    [
        # the others got it: a retry would send it to them again
        (
            ["oncall@example.org", "nobody@example.org"],
            "1 of 2 recipients refused (SMTP 550)",
            False,
        ),
        (["oncall@example.org", "busy@example.org"], "1 of 2 recipients refused (SMTP 450)", False),
        (["nobody@example.org"], "every recipient refused (SMTP 550)", False),
        (["busy@example.org"], "every recipient refused (SMTP 450)", True),
        (
            ["busy@example.org", "nobody@example.org"],
            "every recipient refused (SMTP 450, 550)",
            True,
        ),
    ],
)  # fmt: skip
def test_refused_recipients_fail_the_delivery_without_naming_them(
    refusing: tuple[RefusingSink, int], recipients: list[str], message: str, retryable: bool
) -> None:
    """A partial refusal used to count as sent; a permanent one was retried as transient."""
    sink, port = refusing
    channel = SmtpChannel(
        "127.0.0.1", port, sender="a@example.org", recipients=recipients, starttls=False
    )
    with pytest.raises(AlertDeliveryError) as info:
        channel.send(make_alert())
    assert message in str(info.value)
    assert info.value.retryable is retryable
    assert "nobody" not in str(info.value) and "busy@" not in str(info.value)
    delivered = [r for r in recipients if r.startswith("oncall@")]
    assert [rcpts for _, rcpts in sink.envelopes] == ([delivered] if delivered else [])


@pytest.mark.parametrize(
    ("sender", "recipients", "setting"),
    [
        ("medsecrets@example.org\r\nBcc: attacker@evil.example", ["b@example.org"], "sender"),
        ("medsecrets@example.org", ["b@example.org", "a@b\nX-Injected: 1"], "recipients"),
        ("medsecrets@example.org", ["not an address @ all"], "recipients"),
        ("medsecrets@example.org", ["a@b@c"], "recipients"),
        ("@example.org", ["b@example.org"], "sender"),
        ("medsecrets@", ["b@example.org"], "sender"),
        ("medsecrets@example.org", ["a.@example.org"], "recipients"),
        ("medsecrets@example.org", ["<b@example.org>"], "recipients"),
        ("medsecrets@example.org", ["b@example.org\u2028"], "recipients"),
        ("medsecrets@example.org", [""], "recipients"),
    ],
)
def test_smtp_addresses_must_be_plain(sender: str, recipients: list[str], setting: str) -> None:
    """Such addresses passed, then every alert failed with a bare ``ValueError``."""
    with pytest.raises(ConfigError) as info:
        SmtpChannel("127.0.0.1", 25, sender=sender, recipients=recipients, starttls=False)
    assert f"smtp {setting}: must be an e-mail address" in str(info.value)
    for text in (sender, *recipients):
        assert not text or text not in str(info.value)


def test_smtp_subject_is_one_line_even_if_the_summary_is_not(
    smtp_server: tuple[SmtpSink, int],
) -> None:
    sink, port = smtp_server
    channel = SmtpChannel(
        "127.0.0.1", port, sender="a@example.org", recipients=["b@example.org"], starttls=False
    )
    channel.send(make_alert(summary="two\r\nBcc: evil@example.org\nlines"))
    (message,) = sink.messages
    assert message["Subject"] == "[medsecrets] high rate: two Bcc: evil@example.org lines"
    assert message["Bcc"] is None
    assert sink.envelopes[0][1] == ["b@example.org"]


# --------------------------------------------------------------------------- log


def test_log_channel_writes_one_structured_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="medsecrets.alerts")
    channel = LogChannel()
    alert = make_alert()
    channel.send(alert)
    channel.send(make_alert(severity="low", key="bob"))
    channel.close()

    first, second = [r for r in caplog.records if r.name == "medsecrets.alerts"]
    assert first.levelno == logging.ERROR and second.levelno == logging.INFO
    assert first.getMessage() == "[medsecrets] high rate: alice read 51 secrets in 300 s"
    assert first.__dict__["alert"] == alert.to_dict()
    line = JsonFormatter().format(first)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["logger"] == "medsecrets.alerts"
    assert parsed["alert"]["path"] == "medessence/prod/database/main"
    assert repr(channel) == "LogChannel(name='log', logger='medsecrets.alerts')"
