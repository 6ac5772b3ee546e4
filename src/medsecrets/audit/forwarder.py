"""``HttpForwarderDevice``: audit records to a SIEM over HTTP, through a durable spool.

``write`` appends the lines to a ``DurableSpool`` (fsync'd: the device's
"durable accept") and returns; it never touches the network, so a slow or
absent SIEM never stalls requests. A daemon thread (started by ``open``,
stopped by ``close``) ships the spool in batches of up to ``batch_size``
lines, each a ``POST`` of newline-delimited JSON (``application/x-ndjson``)
to ``url``, at the latest ``flush_interval`` seconds after a record was
written (at once when a full batch is waiting). A batch is acknowledged in the
spool only after a 2xx answer; any other outcome is retried with capped,
jittered exponential backoff (``Retry-After`` is honoured up to the cap), so
nothing is dropped and order is kept. Delivery is at least once: a batch whose
2xx answer was lost (timeout, crash before the acknowledgement) is sent again.
``close`` makes one last attempt to ship what is pending; whatever is still in
the spool is shipped by the next device opened on the same ``spool_dir``.

When the spool is full, ``write`` raises ``SpoolFullError`` (an
``AuditFailure``) and calls ``on_overflow(message)`` once per overflow episode
(an episode ends with the next accepted write), which the server turns into
an alarm.

``health()`` reports the backlog and the last delivery error by kind only
(``"HTTP 503"``, ``"ConnectError"``): never the URL (which may carry
credentials), the headers (which usually do) or a record.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final

import httpx

from medsecrets.audit.device import ChainHead
from medsecrets.audit.spool import DurableSpool, SpoolFullError
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import AuditFailure, ConfigError

__all__ = ["HttpForwarderDevice"]

log = logging.getLogger("medsecrets.audit.forwarder")

_CONTENT_TYPE: Final = "application/x-ndjson"


class HttpForwarderDevice:
    """An ``AuditDevice`` that forwards records to an HTTP endpoint (see module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        spool_dir: Path,
        spool_max_bytes: int,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        timeout: float = 5.0,
        headers: Mapping[str, str] = MappingProxyType({}),
        on_overflow: Callable[[str], None] | None = None,
        verify_tls: bool | str = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Configure the device; nothing is opened before ``open``.

        ``verify_tls`` is ``True`` (system trust store), ``False`` (no
        verification: development only) or the path of a CA bundle.
        Raises ``ConfigError`` naming the first bad setting.
        """
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ConfigError(f"audit device {name!r}: url is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"audit device {name!r}: url must be an http:// or https:// URL")
        for setting, value in (
            ("batch_size", batch_size),
            ("spool_max_bytes", spool_max_bytes),
            ("flush_interval", flush_interval),
            ("timeout", timeout),
            ("backoff_initial", backoff_initial),
        ):
            if value <= 0:
                raise ConfigError(f"audit device {name!r}: {setting} must be positive")
        if backoff_max < backoff_initial:
            raise ConfigError(f"audit device {name!r}: backoff_max must be >= backoff_initial")
        self._name = name
        self._url = parsed
        self._where = f"{parsed.scheme}://{parsed.host}" + (
            f":{parsed.port}" if parsed.port else ""
        )
        self._spool_dir = Path(spool_dir)
        self._spool_max_bytes = spool_max_bytes
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._headers = {**headers, "Content-Type": _CONTENT_TYPE}
        self._on_overflow = on_overflow
        self._verify = verify_tls
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 (backoff jitter, no security role)
        self._spool: DurableSpool | None = None
        self._client: httpx.Client | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._state = threading.Lock()
        self._overflowing = False
        self._last_error: str | None = None
        self._last_error_at: dt.datetime | None = None
        self._last_success_at: dt.datetime | None = None
        self._failures = 0
        self._delivered = 0

    def __repr__(self) -> str:
        return f"HttpForwarderDevice({self._name!r}, to={self._where!r})"

    @property
    def name(self) -> str:
        """The device's configured name."""
        return self._name

    def open(self) -> ChainHead:
        """Open the spool, start the shipping thread; a new chain (``ChainHead()``).

        Lines left in the spool by an earlier run are shipped first.
        """
        if self._spool is not None:
            return ChainHead()
        spool = DurableSpool(self._spool_dir, max_bytes=self._spool_max_bytes)
        try:
            self._client = httpx.Client(
                timeout=self._timeout,
                verify=self._tls_context(),
                headers=self._headers,
                follow_redirects=False,
            )
        except BaseException:
            spool.close()
            raise
        self._spool = spool
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"audit-forwarder-{self._name}", daemon=True
        )
        self._thread.start()
        return ChainHead()

    def write(self, lines: Sequence[bytes]) -> None:
        """Durably spool ``lines``; ``SpoolFullError`` (and ``on_overflow``) when full."""
        spool = self._spool
        if spool is None:
            raise AuditFailure(f"audit device {self._name!r} is not open")
        try:
            spool.append(lines)
        except SpoolFullError as exc:
            self._overflow(exc)
            raise
        with self._state:
            self._overflowing = False
        if spool.pending() >= self._batch_size:
            self._wake.set()

    def close(self) -> None:
        """Stop the thread after one last delivery attempt; close the spool (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(self._timeout * 3 + 1.0)
        client, self._client = self._client, None
        if client is not None:
            client.close()
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()

    def health(self) -> dict[str, object]:
        """A JSON-ready health snapshot for metrics (no URL, header or record).

        Keys: ``pending`` (lines not yet delivered), ``spool_bytes``,
        ``spool_max_bytes``, ``overflowing``, ``delivered`` (lines since
        ``open``), ``consecutive_failures``, ``last_error`` (kind or ``None``),
        ``last_error_at`` and ``last_success_at`` (ISO 8601 or ``None``).
        """
        spool = self._spool
        with self._state:
            return {
                "pending": spool.pending() if spool is not None else None,
                "spool_bytes": spool.size_bytes if spool is not None else None,
                "spool_max_bytes": self._spool_max_bytes,
                "overflowing": self._overflowing,
                "delivered": self._delivered,
                "consecutive_failures": self._failures,
                "last_error": self._last_error,
                "last_error_at": _iso(self._last_error_at),
                "last_success_at": _iso(self._last_success_at),
            }

    # -- internals ----------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | bool:
        if self._verify is False:
            return False
        try:
            context = ssl.create_default_context(
                cafile=self._verify if isinstance(self._verify, str) else None
            )
        except OSError:
            raise ConfigError(
                f"audit device {self._name!r}: verify_tls names an unreadable CA bundle"
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _overflow(self, exc: SpoolFullError) -> None:
        with self._state:
            first, self._overflowing = not self._overflowing, True
        if not first or self._on_overflow is None:
            return
        message = f"audit device {self._name!r}: {exc.message}; audit records are being refused"
        try:
            self._on_overflow(message)
        except Exception:
            log.exception("audit overflow callback failed", extra={"device": self._name})

    def _run(self) -> None:
        """The shipping thread: drain, then sleep until woken or ``flush_interval``."""
        while not self._stop.is_set():
            self._drain(retry=True)
            self._wake.wait(self._flush_interval)
            self._wake.clear()
        self._drain(retry=False)

    def _drain(self, *, retry: bool) -> None:
        """Ship every pending batch (``retry``: until delivered or stopped; else once)."""
        spool, client = self._spool, self._client
        if spool is None or client is None:
            return
        attempt = 0
        while True:
            try:
                batch = spool.peek(self._batch_size)
                if not batch:
                    return
                wait = self._post(client, b"".join(batch))
                if wait is None:
                    spool.ack(len(batch))
                    attempt = 0
                    continue
            except Exception as exc:  # a spool failure: keep the thread, report the kind
                self._failed(type(exc).__name__)
                wait = None
            if not retry or self._stop.is_set():
                return
            delay = min(self._backoff_max, self._backoff_initial * 2.0**attempt)
            delay = max(delay * self._rng.uniform(0.5, 1.0), min(wait or 0.0, self._backoff_max))
            attempt = min(attempt + 1, 62)
            if self._stop.wait(delay):
                return

    def _post(self, client: httpx.Client, body: bytes) -> float | None:
        """POST ``body``; ``None`` on 2xx, else the server's ``Retry-After`` (0 if none)."""
        try:
            response = client.post(self._url, content=body)
        except httpx.HTTPError as exc:
            self._failed(type(exc).__name__)
            return 0.0
        if response.is_success:
            with self._state:
                recovered, self._failures = self._failures, 0
                self._delivered += body.count(b"\n")
                self._last_success_at = self._clock.now()
            if recovered:
                log.info("audit forwarding recovered", extra={"device": self._name})
            return None
        self._failed(f"HTTP {response.status_code}")
        return _retry_after(response.headers.get("Retry-After"))

    def _failed(self, kind: str) -> None:
        with self._state:
            self._failures += 1
            first = self._failures == 1
            self._last_error = kind
            self._last_error_at = self._clock.now()
        if first:
            log.warning(
                "audit forwarding failed; retrying",
                extra={"device": self._name, "error": kind},
            )


def _retry_after(value: str | None) -> float:
    """Seconds of a ``Retry-After`` header in its delta-seconds form (else 0)."""
    if value is None or not value.strip().isdigit():
        return 0.0
    return float(value.strip())


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
