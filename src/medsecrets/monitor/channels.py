"""Alert channels: where a raised ``Alert`` is delivered.

Every channel has a ``name`` (unique within one dispatcher), ``send(alert)``
which returns once the peer accepted the alert and raises otherwise, and
``close()`` which releases its client. Channels are synchronous and
thread-compatible (one dispatcher worker thread drives each channel); retries,
deduplication and rate limiting belong to ``medsecrets.monitor.dispatcher``.

* ``SlackChannel``: a Slack-compatible incoming webhook (``text`` + one
  ``mrkdwn`` section block).
* ``WebhookChannel``: ``Alert.to_dict()`` as JSON, signed with HMAC-SHA256 (see
  ``sign_webhook`` for the scheme and ``verify_webhook_signature`` for the
  receiver's side).
* ``SmtpChannel``: a plain-text email via ``smtplib`` (STARTTLS by default,
  optionally login).
* ``LogChannel``: one structured line on the ``medsecrets.alerts`` logger.

Secrets never leave through a channel's own surface: webhook secrets and SMTP
passwords are held as ``Sensitive``; webhook URLs (a Slack URL's path *is*
its token) are shown as ``redact_url(url)`` in every ``repr``, error and log
line, including httpx's own request log (see ``_HttpxUrlFilter``). Delivery
failures raise ``AlertDeliveryError``, whose message names the channel, the
redacted target and the failure (an HTTP status, an SMTP code or an exception
type), never a foreign exception's message, which could quote a URL or a
server reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from medsecrets.boundedpost import BoundedPoster
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import ConfigError, ProviderError
from medsecrets.monitor.alert import Alert, Severity
from medsecrets.sensitive import Sensitive

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AlertChannel",
    "AlertDeliveryError",
    "LogChannel",
    "SlackChannel",
    "SmtpChannel",
    "WebhookChannel",
    "check_alert_url",
    "check_email_address",
    "check_http_url",
    "is_loopback",
    "redact_url",
    "sign_webhook",
    "verify_webhook_signature",
]

TIMESTAMP_HEADER: Final = "X-Medsecrets-Timestamp"
SIGNATURE_HEADER: Final = "X-Medsecrets-Signature"
_SIGNATURE_PREFIX: Final = "sha256="
_TIMESTAMP: Final = re.compile(r"0|[1-9][0-9]{0,11}")
"""A canonical ``X-Medsecrets-Timestamp``: ASCII digits, no sign, space or leading zero."""
_USER_AGENT: Final = "medsecrets-alerts/1"
_DEFAULT_TIMEOUT: Final = 5.0


class AlertDeliveryError(ProviderError):
    """A channel could not deliver an alert.

    ``retryable`` is ``False`` when trying again cannot help (a 4xx answer other
    than 408/429, refused SMTP credentials, a permanent 5xx SMTP reply).
    """

    code = "alert_delivery_failed"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class AlertChannel(Protocol):
    """A destination for alerts (see the module docstring)."""

    @property
    def name(self) -> str:
        """Unique channel name within a dispatcher (used in stats and ``recent``)."""
        ...

    def send(self, alert: Alert) -> None:
        """Deliver ``alert``; return once accepted, raise (``AlertDeliveryError``) if not."""
        ...

    def close(self) -> None:
        """Release clients and connections; idempotent."""
        ...


# --------------------------------------------------------------------------- helpers


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` plus ``/***`` when the URL has a path or query.

    Credentials (``user:pass@``), the path, the query and the fragment are
    dropped: webhook URLs carry their token there.

    >>> redact_url("https://hooks.slack.com/services/T0/B0/abc")
    'https://hooks.slack.com/***'
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}{'/***' if hidden else ''}"


def check_http_url(setting: str, url: str) -> None:
    """``ConfigError`` naming ``setting`` unless ``url`` is an http(s) URL with a host (and a
    valid port) that both the standard library and httpx read; never echoes the URL (it may
    hold credentials)."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise ConfigError(f"{setting}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(f"{setting}: must be an http(s) URL with a host")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_alert_url(setting: str, url: str) -> None:
    """``check_http_url``, and ``https`` unless the host is loopback (``is_loopback``): a
    webhook URL often is its token (Slack's path) and every alert names principals, paths
    and addresses, so neither crosses a network in clear (the rule of SMTP passwords)."""
    check_http_url(setting, url)
    parts = urlsplit(url)
    if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
        raise ConfigError(f"{setting}: must be an https URL (http only to a loopback host)")


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise ConfigError("timeout: must be a positive number of seconds")


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """The human-readable facts of an alert, in display order (empty ones left out)."""
    facts = [
        ("Severity", alert.severity),
        ("Detector", alert.detector),
        ("Summary", alert.summary),
        ("Time", str(alert.to_dict()["time"])),
        ("Principal", alert.principal or ""),
        ("Source", alert.source or ""),
        ("Path", alert.path or ""),
        ("Category", alert.category or ""),
        ("Environment", alert.environment or ""),
        ("Count", str(alert.count)),
    ]
    return [(label, value) for label, value in facts if value]


# --------------------------------------------------------------------------- HTTP


class _HttpxUrlFilter(logging.Filter):
    """Redacts registered webhook URLs in httpx's ``HTTP Request: ...`` INFO lines.

    httpx logs every request URL at INFO on the ``httpx`` logger; for a Slack
    webhook that is the token. The filter rewrites only the URLs that alert
    channels registered, so other httpx users keep their log lines unchanged.
    """

    def __init__(self) -> None:
        super().__init__("medsecrets.monitor.channels")
        self._urls: dict[str, int] = {}
        self._lock = threading.Lock()

    def register(self, url: str) -> None:
        with self._lock:
            self._urls[url] = self._urls.get(url, 0) + 1

    def unregister(self, url: str) -> None:
        with self._lock:
            left = self._urls.get(url, 0) - 1
            if left > 0:
                self._urls[url] = left
            else:
                self._urls.pop(url, None)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            with self._lock:
                secret = bool(self._urls) and any(str(arg) in self._urls for arg in args)
            if secret:
                record.args = tuple(
                    redact_url(str(arg)) if str(arg) in self._urls else arg for arg in args
                )
        return True


_HTTPX_FILTER: Final = _HttpxUrlFilter()
logging.getLogger("httpx").addFilter(_HTTPX_FILTER)


class _HttpChannel:
    """Shared HTTP POST plumbing of the webhook channels (one sync httpx client each).

    The URL must be ``https`` unless its host is loopback (``check_alert_url``).
    A POST has ``timeout`` seconds in all (connecting, TLS, sending, the
    answer) and reads at most ``boundedpost.MAX_ANSWER`` bytes of the answer
    (``BoundedPoster``): a receiver answering at a drip or without end fails
    the attempt (``timed out``) instead of holding the channel or the
    server's memory. Only the status counts.
    """

    def __init__(self, name: str, url: str, *, setting: str, timeout: float) -> None:
        check_alert_url(setting, url)
        _check_timeout(timeout)
        self._name = name
        self._url = Sensitive(str(httpx.URL(url)))
        self._target = redact_url(url)
        self._timeout = timeout
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT},
            limits=httpx.Limits(max_connections=1),
        )
        self._poster = BoundedPoster(self._client)
        _HTTPX_FILTER.register(self._url.reveal())
        self._closed = False

    @property
    def name(self) -> str:
        """The channel name."""
        return self._name

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        """POST ``body`` within ``timeout`` seconds in all; raise ``AlertDeliveryError``
        unless the answer is 2xx."""
        if self._closed:
            raise AlertDeliveryError(f"alert channel {self._name!r} is closed", retryable=False)
        where = f"alert channel {self._name!r} ({self._target})"
        try:
            response = self._poster.post(
                self._url.reveal(),
                content=body,
                deadline=self._timeout,
                headers={"Content-Type": "application/json", **headers},
            )
        except httpx.TimeoutException:  # a per-operation timeout, or the deadline (cut)
            raise AlertDeliveryError(f"{where}: timed out") from None
        except httpx.HTTPError as exc:
            raise AlertDeliveryError(f"{where}: {type(exc).__name__}") from None
        status = response.status_code
        if not 200 <= status < 300:
            retryable = status >= 500 or status in (408, 429)
            raise AlertDeliveryError(f"{where}: HTTP {status}", retryable=retryable)

    def close(self) -> None:
        """Close the HTTP client; idempotent."""
        if not self._closed:
            self._closed = True
            self._client.close()
            _HTTPX_FILTER.unregister(self._url.reveal())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, url={self._target!r})"


def _mrkdwn_escape(text: str) -> str:
    """Slack's three control characters (so ``<!channel>`` in data pings nobody)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackChannel(_HttpChannel):
    """POSTs a Slack-compatible message to an incoming-webhook URL.

    Payload: ``{"text": <one-line fallback>, "blocks": [{"type": "section",
    "text": {"type": "mrkdwn", "text": <facts>}}]}`` with severity, detector,
    summary, principal, source, path (and the other set facts). The URL is
    secret (its path is the token) and never shown unredacted.
    """

    def __init__(
        self,
        webhook_url: str | Sensitive[str],
        *,
        timeout: float = _DEFAULT_TIMEOUT,
        name: str = "slack",
    ) -> None:
        url = webhook_url.reveal() if isinstance(webhook_url, Sensitive) else webhook_url
        super().__init__(name, url, setting="slack webhook_url", timeout=timeout)

    @staticmethod
    def payload(alert: Alert) -> dict[str, object]:
        """The JSON payload sent for ``alert``."""
        lines = [f"*medsecrets alert: {_mrkdwn_escape(alert.severity)}*"]
        lines += [
            f"*{label}:* {_mrkdwn_escape(value)}"
            for label, value in _facts(alert)
            if label != "Severity"
        ]
        return {
            "text": _mrkdwn_escape(_one_line(alert)),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}],
        }

    def send(self, alert: Alert) -> None:
        """POST the payload; raise ``AlertDeliveryError`` unless Slack answers 2xx."""
        self._post(json.dumps(self.payload(alert), ensure_ascii=False).encode(), {})


def _one_line(alert: Alert) -> str:
    """``[medsecrets] <severity> <detector>: <summary>`` on one line."""
    text = f"[medsecrets] {alert.severity} {alert.detector}: {alert.summary}"
    return " ".join(text.split())


# --------------------------------------------------------------------------- signed webhook


def sign_webhook(secret: bytes | Sensitive[bytes], timestamp: int | str, body: bytes) -> str:
    """The ``X-Medsecrets-Signature`` value for ``body`` sent at ``timestamp``.

    ``"sha256=" + hex(HMAC-SHA256(secret, f"{timestamp}.".encode() + body))``
    where ``timestamp`` is the decimal unix-seconds string sent in
    ``X-Medsecrets-Timestamp``. Binding the timestamp into the MAC lets a
    receiver refuse replays of old deliveries.
    """
    key = secret.reveal() if isinstance(secret, Sensitive) else secret
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256)
    return _SIGNATURE_PREFIX + mac.hexdigest()


def verify_webhook_signature(
    secret: bytes | Sensitive[bytes],
    timestamp: str | int,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a received webhook delivery is authentic and fresh.

    A receiver verifies with the *raw* request body (before any JSON parsing)
    and the two headers as received::

        ok = verify_webhook_signature(
            secret, headers["X-Medsecrets-Timestamp"], raw_body,
            headers["X-Medsecrets-Signature"])

    ``True`` only if the timestamp is canonical decimal unix seconds (ASCII
    digits, no sign, space or leading zero, at most 12 digits; an ``int`` is
    taken as its decimal string) within ``tolerance`` seconds of ``now``
    (default: the current unix time) and the signature is exactly
    ``sign_webhook(secret, timestamp, body)`` over that string (no space
    around it; compared in constant time with ``hmac.compare_digest``). So a
    delivery verifies under one spelling of its headers only, and a receiver
    that drops deliveries whose (timestamp, signature), or signature alone
    (it covers the timestamp), it has seen within the tolerance stops every
    replay.
    """
    sent = str(timestamp) if isinstance(timestamp, int) else timestamp
    if not isinstance(sent, str) or not _TIMESTAMP.fullmatch(sent):
        return False
    current = time.time() if now is None else now
    if abs(current - int(sent)) > tolerance:
        return False
    if not isinstance(signature, str):
        return False
    expected = sign_webhook(secret, sent, body)
    return hmac.compare_digest(expected.encode(), signature.encode())


class WebhookChannel(_HttpChannel):
    """POSTs ``Alert.to_dict()`` as JSON, signed with HMAC-SHA256.

    Headers: ``X-Medsecrets-Timestamp`` (unix seconds from ``clock``) and
    ``X-Medsecrets-Signature`` (see ``sign_webhook``). The body is compact,
    key-sorted UTF-8 JSON; receivers must verify the raw bytes. ``secret``
    (at least 16 bytes) is never shown; the URL is shown redacted.
    """

    _MIN_SECRET = 16

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | Sensitive[bytes],
        timeout: float = _DEFAULT_TIMEOUT,
        name: str = "webhook",
        clock: Clock | None = None,
    ) -> None:
        key = secret.reveal() if isinstance(secret, Sensitive) else secret
        if not isinstance(key, bytes) or len(key) < self._MIN_SECRET:
            raise ConfigError(f"webhook secret: must be at least {self._MIN_SECRET} bytes")
        super().__init__(name, url, setting="webhook url", timeout=timeout)
        self._secret = Sensitive(key)
        self._clock: Clock = clock or SystemClock()

    @staticmethod
    def body(alert: Alert) -> bytes:
        """The exact bytes POSTed for ``alert``."""
        return json.dumps(
            alert.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode()

    def send(self, alert: Alert) -> None:
        """POST the signed body; raise ``AlertDeliveryError`` unless the answer is 2xx."""
        body = self.body(alert)
        timestamp = str(int(self._clock.now().timestamp()))
        self._post(
            body,
            {
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign_webhook(self._secret, timestamp, body),
            },
        )


# --------------------------------------------------------------------------- email


def check_email_address(setting: str, address: object) -> None:
    """``ConfigError`` naming ``setting`` unless ``address`` is one plain address.

    Plain: a string without whitespace or control (any non-printable)
    character, with exactly one ``@`` between a non-empty local part and
    domain, that ``email.headerregistry.Address(addr_spec=...)`` reads back
    unchanged. Never echoes the address.
    """
    error = ConfigError(f"{setting}: must be an e-mail address (local@domain, nothing else)")
    if not isinstance(address, str) or not address:
        raise error
    if any(ch.isspace() or not ch.isprintable() for ch in address):
        raise error
    local, at, domain = address.partition("@")
    if not at or not local or not domain or "@" in domain:
        raise error
    try:
        parsed = Address(addr_spec=address).addr_spec
    except (ValueError, IndexError, MessageError):
        raise error from None
    if parsed != address:
        raise error


class _SocketDeadline:
    """Shuts a connection down once ``seconds`` have passed (a context manager).

    smtplib's ``timeout`` bounds each socket operation, not a session: a
    server answering at a drip holds it for ever. ``watch(sock)`` keeps a
    duplicate of the session's socket (it outlives a TLS wrap, which detaches
    the original); at the deadline the watchdog shuts it down, which ends any
    read or write of the session at once. A socket watched after the
    deadline is shut down at once. Leaving closes the duplicate.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._expired = False
        self._sock: socket.socket | None = None
        self._watchdog = threading.Timer(seconds, self._expire)
        self._watchdog.daemon = True

    @property
    def expired(self) -> bool:
        """Whether the deadline passed (the connection was cut)."""
        return self._expired

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock``'s connection at the deadline (now, if it passed)."""
        with self._lock:
            self._close()
            self._sock = sock.dup()
            if self._expired:
                self._shutdown()

    def __enter__(self) -> _SocketDeadline:
        self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchdog.cancel()
        with self._lock:
            self._close()

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Smtp(smtplib.SMTP):
    """``smtplib.SMTP`` whose connection ``deadline`` watches (see ``_SocketDeadline``)."""

    def __init__(self, host: str, port: int, *, timeout: float, deadline: _SocketDeadline) -> None:
        self._deadline = deadline  # before connecting: __init__ connects
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's hook for the connection (SMTP_SSL overrides it too); not in typeshed
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self._deadline.watch(sock)
        return sock


def _smtp_failure(where: str, exc: Exception, recipients: int) -> AlertDeliveryError:
    """The delivery error for ``exc`` (SMTP codes and counts only: no address, no reply)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return AlertDeliveryError(f"{where}: login refused (SMTP {exc.smtp_code})", retryable=False)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _refused(where, exc.recipients, recipients)
    if isinstance(exc, smtplib.SMTPResponseException):
        return AlertDeliveryError(f"{where}: SMTP {exc.smtp_code}", retryable=exc.smtp_code < 500)
    return AlertDeliveryError(f"{where}: {type(exc).__name__}")


def _refused(
    where: str, refused: Mapping[str, tuple[int, bytes]], recipients: int
) -> AlertDeliveryError:
    """Recipients the server refused: final when it took the message for the others (a
    retry would send it to them again) or refused all for good (5xx); else retryable."""
    codes = sorted({code for code, _ in refused.values()})
    shown = ", ".join(map(str, codes))
    if len(refused) < recipients:
        return AlertDeliveryError(
            f"{where}: {len(refused)} of {recipients} recipients refused (SMTP {shown})",
            retryable=False,
        )
    return AlertDeliveryError(
        f"{where}: every recipient refused (SMTP {shown})",
        retryable=any(code < 500 for code in codes),
    )


class SmtpChannel:
    """Sends each alert as a plain-text email through an SMTP server.

    Subject: ``[medsecrets] <severity> <detector>: <summary>`` (one line).
    With ``starttls`` (the default) the session is upgraded (certificate
    verified with ``ssl_context``, default ``ssl.create_default_context()``)
    before any login. ``username``/``password`` log in; sending a password
    over an unencrypted session is refused unless the host is loopback. The
    sender and recipients must be plain addresses (``check_email_address``).
    One SMTP session per alert (alerts are rare, sessions short-lived), with
    ``timeout`` seconds in all (``timeout`` also bounds each socket
    operation): past it the connection is cut and the attempt fails as
    ``timed out``. A recipient the server refuses fails the delivery (see
    ``_refused``). The password is held as ``Sensitive`` and never appears in
    ``repr``, errors or logs; errors name no address.
    """

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        recipients: Sequence[str],
        starttls: bool = True,
        username: str | None = None,
        password: Sensitive[str] | str | None = None,
        timeout: float = 10.0,
        name: str = "email",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not host:
            raise ConfigError("smtp host: required")
        if not 0 < port < 65536:
            raise ConfigError("smtp port: must be 1-65535")
        check_email_address("smtp sender", sender)
        if not recipients:
            raise ConfigError("smtp recipients: at least one email address is required")
        for recipient in recipients:
            check_email_address("smtp recipients", recipient)
        if (username is None) != (password is None):
            raise ConfigError("smtp username/password: give both or neither")
        if username is not None and not starttls and not is_loopback(host):
            raise ConfigError("smtp starttls: required to send a password to a remote server")
        _check_timeout(timeout)
        self._name = name
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = tuple(recipients)
        self._starttls = starttls
        self._username = username
        self._password: Sensitive[str] | None = (
            Sensitive(password) if isinstance(password, str) else password
        )
        self._timeout = timeout
        self._ssl_context = ssl_context

    @property
    def name(self) -> str:
        """The channel name."""
        return self._name

    def message(self, alert: Alert) -> EmailMessage:
        """The email sent for ``alert``."""
        msg = EmailMessage()
        msg["Subject"] = _one_line(alert)
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self._sender.rpartition("@")[2] or None)
        width = max(len(label) for label, _ in _facts(alert)) + 2
        lines = ["A medsecrets monitor raised an alert.", ""]
        lines += [f"{label + ':':<{width}}{value}" for label, value in _facts(alert)]
        lines += [f"{'Key:':<{width}}{alert.key}"]
        if alert.details:
            lines += ["", "Details:"]
            lines += [
                f"  {key}: {json.dumps(value, default=str, ensure_ascii=False)}"
                for key, value in sorted(alert.details.items())
            ]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, alert: Alert) -> None:
        """Send the email within ``timeout`` seconds; raise ``AlertDeliveryError`` unless the
        server accepts it for every recipient."""
        where = f"alert channel {self._name!r} (smtp {self._host}:{self._port})"
        msg = self.message(alert)
        deadline = _SocketDeadline(self._timeout)
        try:
            with (
                deadline,
                _Smtp(self._host, self._port, timeout=self._timeout, deadline=deadline) as smtp,
            ):
                if self._starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password.reveal())
                refused = smtp.send_message(
                    msg, from_addr=self._sender, to_addrs=list(self._recipients)
                )
        except (smtplib.SMTPException, OSError) as exc:
            if deadline.expired:
                raise AlertDeliveryError(f"{where}: timed out") from None
            raise _smtp_failure(where, exc, len(self._recipients)) from None
        if refused:
            raise _refused(where, refused, len(self._recipients))

    def close(self) -> None:
        """Nothing to release (one session per alert)."""

    def __repr__(self) -> str:
        return (
            f"SmtpChannel(name={self._name!r}, host={self._host!r}, port={self._port}, "
            f"sender={self._sender!r}, recipients={list(self._recipients)!r}, "
            f"starttls={self._starttls}, username={self._username!r})"
        )


# --------------------------------------------------------------------------- log


_LEVELS: Final[dict[Severity, int]] = {
    "info": logging.INFO,
    "low": logging.INFO,
    "medium": logging.WARNING,
    "high": logging.ERROR,
    "critical": logging.CRITICAL,
}


class LogChannel:
    """Writes one structured log line per alert.

    The record goes to ``logger_name`` (default ``medsecrets.alerts``) at a
    level from the severity (info/low: INFO, medium: WARNING, high: ERROR,
    critical: CRITICAL), message ``[medsecrets] <severity> <detector>:
    <summary>`` and ``extra={"alert": alert.to_dict()}`` (the JSON formatter
    of ``medsecrets.logs`` writes it as a field). Never fails.
    """

    rate_limited: Final = False
    """Alerts go to the log always: the dispatcher's per-channel limit does not apply."""

    def __init__(self, logger_name: str = "medsecrets.alerts", *, name: str = "log") -> None:
        self._name = name
        self._logger = logging.getLogger(logger_name)

    @property
    def name(self) -> str:
        """The channel name."""
        return self._name

    def send(self, alert: Alert) -> None:
        """Log the alert."""
        self._logger.log(
            _LEVELS.get(alert.severity, logging.WARNING),
            "%s",
            _one_line(alert),
            extra={"alert": alert.to_dict()},
        )

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"LogChannel(name={self._name!r}, logger={self._logger.name!r})"
