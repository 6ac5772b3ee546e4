"""``HttpForwarderDevice``: audit records to a SIEM over HTTP, through a durable spool.

``write`` appends the lines to a ``DurableSpool`` (fsync'd: the device's
"durable accept") and returns; it never touches the network, so a slow or
absent SIEM never stalls requests. A daemon thread (started by ``open``,
stopped by ``close``) ships the spool in batches of up to ``batch_size``
lines and ``batch_max_bytes`` bytes (a longer line goes alone), each a
``POST`` of newline-delimited JSON (``application/x-ndjson``) to ``url``, at
the latest ``flush_interval`` seconds after a record was written (at once
when a full batch is waiting).

Delivery:

- A batch is acknowledged in the spool only after a 2xx answer; any other
  outcome is retried with capped, jittered exponential backoff
  (``Retry-After`` is honoured up to the cap), so nothing is dropped and
  order is kept. Delivery is at least once: a batch whose 2xx answer was lost
  (timeout, crash before the acknowledgement) is sent again.
- A POST has ``timeout`` seconds in all (connecting, sending, the answer):
  past that deadline its connection is cut and it counts as a failure
  (``"Timeout"``), so a SIEM that answers at a drip cannot stall shipping.
  At most ``boundedpost.MAX_ANSWER`` bytes of an answer are read, never
  decompressed (``medsecrets.boundedpost.BoundedPoster``).
- ``413`` (payload too large): the batch is halved and sent again, down to
  one line. A single line the SIEM still refuses with 413 is *dropped* from
  the spool: ``on_overflow`` is called with a message saying so, ``health()``
  counts it in ``dropped`` and the SIEM sees a gap in the chain. Keeping it
  would stop all shipping for good (any client that can make one oversized
  record could switch the SIEM copy off); other devices still hold it.
- When a delivered batch cannot be acknowledged (the spool directory became
  read-only, the disk failed), the batch is never POSTed again: only the
  acknowledgement is retried, with backoff, and the device reports each
  attempt as a failure (``consecutive_failures`` keeps growing,
  ``last_error`` is ``"SpoolError"``) until it succeeds.

``close`` makes one last attempt to ship what is pending, for at most
``_CLOSE_BUDGET`` seconds (or ``timeout`` if smaller), then cuts the POST in
flight; whatever is still in the spool is shipped by the next device opened
on the same ``spool_dir``.

Spools left by earlier runs: a server with ``workers > 1`` gives each worker
the spool ``<stem>-<pid><suffix>`` (``<spool_dir>-<pid>``) of the configured
directory, which no later worker (another pid) would open again. So ``open``
also claims ``<base>`` and every ``<base>-<digits>`` beside its own
directory (``<base>`` is ``spool_dir`` without a ``-<our pid>`` suffix) that
is a spool (holds ``LOCK``), is not locked by another process, is not named
after a live process (a sibling worker that is about to open it itself) and
whose records are this device's (their ``"device"`` is this device's name).
Those are shipped first, then removed.

When the spool is full, ``write`` raises ``SpoolFullError`` (an
``AuditFailure``) and calls ``on_overflow(message)`` once per overflow episode
(an episode ends with the next accepted write), which the server turns into
an alarm.

``health()`` reports the backlog and the last delivery error by kind only
(``"HTTP 503"``, ``"ConnectError"``, ``"TLSCertificateError"`` when the
SIEM's certificate does not chain to the trusted CAs, ``"TLSError"`` for
another TLS failure, ``"CAFileError"`` while the CA bundle cannot be used):
never the URL (which may carry credentials), the headers (which usually do)
or a record.

Proxies: an ``https`` URL goes through the proxy the environment names
(``HTTPS_PROXY``/``ALL_PROXY``, ``NO_PROXY``: a tunnel, TLS end to end, the
headers never sent to the proxy); a plain ``http`` URL never does
(``_DIRECT_PLAIN_HTTP``): the proxy would see the records and headers in clear.

TLS: the SIEM's certificate is checked against the system trust store, or
only against the CA bundle ``verify_tls`` names (``cabundle.ca_context``: a
regular PEM file); TLS 1.2 at least. The bundle is read when the device
connects first: at ``open``, or, while it cannot be used (missing, unreadable,
no certificate: a rotation half done when a worker starts), again before each
delivery attempt, each a failure (``"CAFileError"``) with the records kept in
the spool, so a bad bundle never stops ``open`` (nor the server with it) and
shipping starts once it is fixed. Once read it is kept until ``close``: a CA
rotated on disk is used from the next ``open`` (the next start of the server
or of the worker).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import re
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

import httpx

from medsecrets.audit.device import ChainHead
from medsecrets.audit.spool import DurableSpool, SpoolBusyError, SpoolError, SpoolFullError
from medsecrets.boundedpost import BoundedPoster, DeadlineExceeded
from medsecrets.cabundle import ca_context
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import AuditFailure, ConfigError
from medsecrets.processes import alive

__all__ = ["HttpForwarderDevice"]

log = logging.getLogger("medsecrets.audit.forwarder")

_CONTENT_TYPE: Final = "application/x-ndjson"
_CLOSE_BUDGET: Final = 2.0
"""Seconds ``close`` gives its last delivery attempt (at most ``timeout``)."""
_JOIN_SLACK: Final = 1.0
_TOO_LARGE: Final = 413
_DIRECT_PLAIN_HTTP: Final[dict[str, httpx.BaseTransport | None]] = {"http://": None}
"""httpx ``mounts``: a plain http URL is reached directly, never through a proxy of the
environment (``HTTP_PROXY``, ``ALL_PROXY``), which would get the records and the headers
in clear; an https URL may use one (``HTTPS_PROXY``: a CONNECT tunnel, TLS to the SIEM)."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a POST came to: ``delivered``, ``too_large`` (413) or neither (retry after)."""

    delivered: bool = False
    too_large: bool = False
    retry_after: float = 0.0


_DELIVERED: Final = _Outcome(delivered=True)
_REFUSED_TOO_LARGE: Final = _Outcome(too_large=True)
_FAILED: Final = _Outcome()


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
        batch_max_bytes: int = 1 << 20,
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
        verification: tests only; the configuration cannot ask for it) or the
        path of a PEM CA bundle, then the only CAs trusted (``cabundle.ca_context``);
        a bundle that cannot be used is a delivery failure (``"CAFileError"``, the
        records stay spooled), never an error of ``open`` (module docstring).
        ``on_overflow(message)`` is the device's alarm (a full spool, a
        dropped record). Raises ``ConfigError`` naming the first bad setting.
        """
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ConfigError(f"audit device {name!r}: url is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"audit device {name!r}: url must be an http:// or https:// URL")
        for setting, value in (
            ("batch_size", batch_size),
            ("batch_max_bytes", batch_max_bytes),
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
        self._batch_max_bytes = batch_max_bytes
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._headers = {**headers, "Content-Type": _CONTENT_TYPE}
        self._on_overflow = on_overflow
        self._verify = verify_tls
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 (backoff jitter, no security role)
        self._mark = b'"device":' + json.dumps(name).encode()
        self._spool: DurableSpool | None = None
        self._leftovers: tuple[DurableSpool, ...] = ()
        self._client: httpx.Client | None = None
        self._poster: BoundedPoster | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._close_by = math.inf
        self._state = threading.Lock()
        self._overflowing = False
        self._last_error: str | None = None
        self._last_error_at: dt.datetime | None = None
        self._last_success_at: dt.datetime | None = None
        self._failures = 0
        self._delivered = 0
        self._dropped = 0

    def __repr__(self) -> str:
        return f"HttpForwarderDevice({self._name!r}, to={self._where!r})"

    @property
    def name(self) -> str:
        """The device's configured name."""
        return self._name

    def open(self) -> ChainHead:
        """Open the spool, start the shipping thread; a new chain (``ChainHead()``).

        Lines left in the spool by an earlier run, and in spools earlier runs
        left beside it (see module docstring), are shipped first.
        """
        if self._spool is not None:
            return ChainHead()
        spool = DurableSpool(self._spool_dir, max_bytes=self._spool_max_bytes)
        try:
            self._connect()
        except BaseException:
            spool.close()
            raise
        self._spool = spool
        self._leftovers = self._claim_leftovers()
        self._stop.clear()
        self._close_by = math.inf
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
        """Stop the thread after one last, bounded delivery attempt; close the spools.

        Returns within about ``min(timeout, _CLOSE_BUDGET) + _JOIN_SLACK``
        seconds: a POST still in flight then is cut (idempotent).
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            budget = min(self._timeout, _CLOSE_BUDGET)
            self._close_by = self._clock.monotonic() + budget
            self._stop.set()
            self._wake.set()
            thread.join(budget)
            if thread.is_alive() and self._poster is not None:
                self._poster.cut()
                thread.join(_JOIN_SLACK)
        self._poster = None
        client, self._client = self._client, None
        if client is not None:
            client.close()
        spools = (*self._leftovers, self._spool)
        self._leftovers, self._spool = (), None
        for spool in spools:
            if spool is not None:
                spool.close()

    def health(self) -> dict[str, object]:
        """A JSON-ready health snapshot for metrics (no URL, header or record).

        Keys: ``pending`` (lines not yet delivered, those of leftover spools
        included), ``spool_bytes``, ``spool_max_bytes``, ``overflowing``,
        ``delivered`` (lines since ``open``), ``dropped`` (lines the SIEM
        refused as too large, since ``open``), ``consecutive_failures``,
        ``last_error`` (kind or ``None``), ``last_error_at`` and
        ``last_success_at`` (ISO 8601 or ``None``).
        """
        spool, leftovers = self._spool, self._leftovers
        with self._state:
            return {
                "pending": (
                    spool.pending() + sum(s.pending() for s in leftovers)
                    if spool is not None
                    else None
                ),
                "spool_bytes": spool.size_bytes if spool is not None else None,
                "spool_max_bytes": self._spool_max_bytes,
                "overflowing": self._overflowing,
                "delivered": self._delivered,
                "dropped": self._dropped,
                "consecutive_failures": self._failures,
                "last_error": self._last_error,
                "last_error_at": _iso(self._last_error_at),
                "last_success_at": _iso(self._last_success_at),
            }

    # -- internals ----------------------------------------------------------------------------

    def _connect(self) -> BoundedPoster | None:
        """The poster, made now if there is none yet; ``None`` (a failure of kind
        ``"CAFileError"``, the reason logged) while the CA bundle cannot be used."""
        if self._poster is not None:
            return self._poster
        try:
            verify = self._tls_context()
        except ValueError as exc:
            if self._failed("CAFileError"):
                log.error(
                    "audit forwarding: the CA bundle cannot be used; records stay spooled",
                    extra={"device": self._name, "error": f"CA bundle {exc}"},
                )
            return None
        self._client = httpx.Client(
            timeout=self._timeout,
            verify=verify,
            headers=self._headers,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=1),
            mounts=_DIRECT_PLAIN_HTTP,
        )
        self._poster = BoundedPoster(self._client)
        return self._poster

    def _tls_context(self) -> ssl.SSLContext | bool:
        """``verify_tls`` as httpx takes it; ``ValueError`` (``ca_context``) for a bad bundle."""
        if self._verify is False:
            return False
        return ca_context(self._verify if isinstance(self._verify, str) else None)

    def _claim_leftovers(self) -> tuple[DurableSpool, ...]:
        """The spools earlier runs left beside ours that hold this device's records, locked."""
        claimed = []
        for path in _leftover_dirs(self._spool_dir, os.getpid()):
            try:
                spool = DurableSpool(path, max_bytes=self._spool_max_bytes, create=False)
            except SpoolBusyError:
                continue
            except SpoolError as exc:
                log.warning(
                    "audit spool left by an earlier run cannot be shipped",
                    extra={"device": self._name, "error": exc.message},
                )
                continue
            if self._holds_our_records(spool):
                claimed.append(spool)
            else:
                spool.close()  # another device's: not ours to ship
        return tuple(claimed)

    def _holds_our_records(self, spool: DurableSpool) -> bool:
        """Whether ``spool`` is empty or its next record is this device's (``"device"``)."""
        try:
            first = spool.peek(1)
        except SpoolError:
            return False
        return not first or self._mark in first[0]

    def _overflow(self, exc: SpoolFullError) -> None:
        with self._state:
            first, self._overflowing = not self._overflowing, True
        if first:
            self._alarm(f"{exc.message}; audit records are being refused")

    def _alarm(self, what: str) -> None:
        """Raise the device's alarm (``on_overflow``) about ``what`` (no record, no URL)."""
        if self._on_overflow is None:
            return
        try:
            self._on_overflow(f"audit device {self._name!r}: {what}")
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
        """Ship the leftover spools (removing each once empty), then ours (see ``_ship``)."""
        spool = self._spool
        poster = self._connect() if spool is not None else None
        if spool is None or poster is None:
            return
        for leftover in self._leftovers:
            if not self._ship(leftover, poster, retry=retry):
                return
            self._leftovers = tuple(s for s in self._leftovers if s is not leftover)
            try:
                leftover.remove()
            except SpoolError as exc:
                leftover.close()
                log.warning(
                    "shipped audit spool left by an earlier run not removed",
                    extra={"device": self._name, "error": exc.message},
                )
        self._ship(spool, poster, retry=retry)

    def _may_send(self, retry: bool) -> bool:
        """Whether to send (on): until ``close`` (``retry``), or until its budget is spent."""
        if retry:
            return not self._stop.is_set()
        return self._clock.monotonic() < self._close_by

    def _ship(self, spool: DurableSpool, poster: BoundedPoster, *, retry: bool) -> bool:
        """Ship every pending line of ``spool``, batch by batch; whether it is empty now.

        Failed POSTs are retried after a backoff (``retry``) or end the attempt
        (closing). A batch refused with 413 is halved (the smaller size holds
        for the rest of this call); a single line refused with 413 is dropped
        (``_drop``). A delivered batch is never POSTed again, also when its
        acknowledgement fails (``_acknowledge``).
        """
        limit = self._batch_size
        attempt = 0
        while self._may_send(retry):
            outcome = _FAILED
            try:
                batch = spool.peek(limit, self._batch_max_bytes)
            except SpoolError:
                self._failed("SpoolError")
            else:
                if not batch:
                    return True
                outcome = self._post(poster, b"".join(batch))
            if outcome.delivered:
                if not self._acknowledge(spool, len(batch), retry=retry):
                    return False
                self._succeeded(len(batch))
                attempt = 0
                continue
            if outcome.too_large and len(batch) > 1:
                limit = len(batch) // 2
                continue
            if outcome.too_large:
                if not self._acknowledge(spool, 1, retry=retry):
                    return False
                self._drop(len(batch[0]))
                continue
            if not retry or not self._pause(attempt, outcome.retry_after):
                return False
            attempt = min(attempt + 1, 62)
        return False

    def _acknowledge(self, spool: DurableSpool, count: int, *, retry: bool) -> bool:
        """Acknowledge the next ``count`` lines, retried with backoff (``retry``) until it
        works or ``close``; whether it did. Each failure counts (``_failed``)."""
        attempt = 0
        while True:
            try:
                spool.ack(count)
            except SpoolError as exc:
                if self._failed("SpoolError"):
                    log.error(
                        "audit spool cannot record deliveries; no batch is sent meanwhile",
                        extra={"device": self._name, "error": exc.message},
                    )
            else:
                return True
            if not retry or not self._pause(attempt):
                return False
            attempt = min(attempt + 1, 62)

    def _pause(self, attempt: int, retry_after: float = 0.0) -> bool:
        """Back off before retry ``attempt`` (jittered, capped); ``False`` if closed meanwhile."""
        delay = min(self._backoff_max, self._backoff_initial * 2.0**attempt)
        delay = max(delay * self._rng.uniform(0.5, 1.0), min(retry_after, self._backoff_max))
        return not self._stop.wait(delay)

    def _post(self, poster: BoundedPoster, body: bytes) -> _Outcome:
        """POST ``body`` within its deadline (see module docstring); what came of it.

        A failure is reported (``_failed``); a success only once acknowledged.
        """
        budget = max(0.0, min(self._timeout, self._close_by - self._clock.monotonic()))
        try:
            response = poster.post(self._url, content=body, deadline=budget)
        except DeadlineExceeded:
            self._failed("Timeout")
            return _FAILED
        except httpx.HTTPError as exc:
            self._failed(_error_kind(exc))
            return _FAILED
        if response.is_success:
            return _DELIVERED
        self._failed(f"HTTP {response.status_code}")
        if response.status_code == _TOO_LARGE:
            return _REFUSED_TOO_LARGE
        return _Outcome(retry_after=_retry_after(response.headers.get("Retry-After")))

    def _succeeded(self, lines: int) -> None:
        with self._state:
            recovered, self._failures = self._failures, 0
            self._delivered += lines
            self._last_success_at = self._clock.now()
        if recovered:
            log.info("audit forwarding recovered", extra={"device": self._name})

    def _drop(self, size: int) -> None:
        """A line the SIEM refuses as too large was dropped: count it, log it, raise the alarm."""
        with self._state:
            self._dropped += 1
        log.error(
            "audit record refused by the SIEM as too large (HTTP 413): dropped from the spool",
            extra={"device": self._name, "bytes": size},
        )
        self._alarm(
            f"a {size}-byte audit record was refused by the SIEM as too large (HTTP 413) "
            "and dropped; the SIEM's copy of the chain has a gap"
        )

    def _failed(self, kind: str) -> bool:
        """Count a failure of ``kind``; whether it is the first in a row (then logged)."""
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
        return first


def _leftover_dirs(spool_dir: Path, pid: int) -> list[Path]:
    """Directories beside ``spool_dir`` that earlier runs of its device may have spooled to.

    ``<base>`` and ``<base>-<digits>`` (with ``spool_dir``'s suffix), where
    ``<base>`` is ``spool_dir``'s stem without a ``-<pid>`` ending: every such
    real directory (no symlink) but ``spool_dir`` itself and those whose
    digits name a live process. Sorted by name.
    """
    stem, suffix, own = spool_dir.stem, spool_dir.suffix, f"-{pid}"
    base = stem[: -len(own)] if stem.endswith(own) and len(stem) > len(own) else stem
    pattern = re.compile(re.escape(base) + r"(?:-([0-9]+))?" + re.escape(suffix))
    found = []
    try:
        entries = list(os.scandir(spool_dir.parent))
    except OSError:
        return []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or entry.name == spool_dir.name:
            continue
        with contextlib.suppress(OSError):
            if not entry.is_dir(follow_symlinks=False):
                continue
            if match[1] is None or not alive(int(match[1])):
                found.append(Path(entry.path))
    return sorted(found)


def _error_kind(exc: httpx.HTTPError) -> str:
    """The kind of a failed POST for ``health()``: a TLS failure by name (httpx calls it a
    ``ConnectError``, like a refused connection), else the exception's class name."""
    cause: BaseException | None = exc
    for _ in range(8):  # httpx -> httpcore -> ssl; bounded (a chain may loop)
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLSCertificateError"
        if isinstance(cause, ssl.SSLError):
            return "TLSError"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _retry_after(value: str | None) -> float:
    """Seconds of a ``Retry-After`` header in its delta-seconds form (else 0)."""
    if value is None or not value.strip().isdigit():
        return 0.0
    return float(value.strip())


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
