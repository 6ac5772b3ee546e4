"""``MonitorLink``: a worker's feed to the shared monitor process (``workers > 1``).

With several worker processes the detectors must see every worker's requests,
or each threshold counts per worker (a principal spread over four workers may
read four times the rate limit unseen). So a multi-worker server runs one
monitor process (``server.monitorprocess``) beside its workers, and every
worker hands the events of its responses to it through a ``MonitorLink``
instead of running detectors of its own.

The link's contract:

* ``submit(event)`` never blocks and never raises: it queues the event (at most
  ``max_queue``; beyond that it drops it and counts it in ``dropped``, exported
  with the monitor's other drops) and wakes the link's thread. The thread
  connects (again and again while the monitor process is down or restarting:
  the queue waits meanwhile, within its bound), sends the audit device's HMAC
  key whenever it changes (``("keys", key)``: the monitor seals its saved state
  with a key derived from it, as an audit process does; ``("forget",)`` while
  sealed) and the queued events in batches. A batch whose send failed, and what
  is still queued when the link stops unconnected, are counted in ``dropped``;
  what the monitor process had received but not yet run when it died is lost
  uncounted (events are not acknowledged: alerts are).
* What the monitor sends back goes to ``on_message`` on the link's reader
  thread: the worker's ``AlertReceiver``. ``("alerts", docs, counts)``: the
  alerts raised by the events this worker sent, which it dispatches and
  audits; ``("noted", docs, counts)``: those another worker's events raised,
  which it only shows in ``alerts list`` and deduplicates against. The monitor
  numbers each ``alerts`` message (a fourth item, taken off before
  ``on_message``); once ``on_message`` returned, the reader acknowledges it
  (``("ack", number)``), and the monitor gives the alerts of a connection that
  ended without acknowledging them to another worker (a worker that stops with
  alerts unread in its socket loses none).
* Events sent carry neither the token nor the request body (the detectors read
  neither): ``pack_event`` with both cleared.
* The link proves itself with the 32-byte cookie the server gave its workers
  (``MEDSECRETS_MONITOR_LINK``, with the socket's path) before any frame;
  frames are ``audit.channel``'s.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Final, NamedTuple

from medsecrets.audit.channel import FrameError, FrameReader, Message, encode
from medsecrets.audit.packed import pack_event
from medsecrets.audit.record import AuditEvent

__all__ = ["LINK_ENV", "LinkAddress", "MonitorLink", "link_from_env"]

_log = logging.getLogger("medsecrets.monitor")

LINK_ENV: Final = "MEDSECRETS_MONITOR_LINK"
"""Set by a multi-worker server for its workers: ``{"socket": path, "cookie": hex}``."""

COOKIE_BYTES: Final = 32

_TOKEN: Final = 5
_DATA: Final = 17
"""Where ``pack_event`` puts the token and the request body (cleared before sending)."""

_BATCH: Final = 4096
_RETRY: Final = (0.05, 2.0)
"""First and longest wait between connection attempts (doubling)."""


class LinkAddress(NamedTuple):
    """Where the monitor process listens and the cookie that admits a worker."""

    socket: str
    cookie: bytes

    def __repr__(self) -> str:  # the cookie is a credential
        return f"LinkAddress(socket={self.socket!r})"

    def to_env(self) -> str:
        """The value of ``LINK_ENV`` for this address."""
        return json.dumps({"socket": self.socket, "cookie": self.cookie.hex()})


def link_from_env(environ: dict[str, str] | None = None) -> LinkAddress | None:
    """The address ``LINK_ENV`` gives (``None`` when unset); ``ValueError`` if malformed."""
    raw = (os.environ if environ is None else environ).get(LINK_ENV)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
        cookie = bytes.fromhex(doc["cookie"])
        path = doc["socket"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{LINK_ENV} is malformed") from None
    if not isinstance(path, str) or not path or len(cookie) != COOKIE_BYTES:
        raise ValueError(f"{LINK_ENV} is malformed")
    return LinkAddress(path, cookie)


KeyMaterial = Callable[[], "bytes | None"]
"""The HMAC key of the audit device whose key seals the monitor's state (``None``: sealed)."""


class MonitorLink:
    """See module docstring. ``submit`` is thread-safe; the counters may be read anywhere."""

    def __init__(
        self,
        address: LinkAddress,
        *,
        material: KeyMaterial,
        on_message: Callable[[Message], None],
        max_queue: int = 65536,
    ) -> None:
        self._address = address
        self._material = material
        self._on_message = on_message
        self._max_queue = max_queue
        self._queue: collections.deque[AuditEvent] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._sending = threading.Lock()  # one frame at a time: events and acks
        self._reader: threading.Thread | None = None
        self.submitted = 0
        self.dropped = 0
        self.connected = False

    def __repr__(self) -> str:
        return (
            f"MonitorLink(socket={self._address.socket!r}, connected={self.connected},"
            f" dropped={self.dropped})"
        )

    # -- the request path ---------------------------------------------------------------
    def submit(self, event: AuditEvent) -> None:
        """Queue ``event`` for the monitor (never blocks, never raises)."""
        with self._lock:
            self.submitted += 1
            if len(self._queue) >= self._max_queue or self._stop.is_set():
                self.dropped += 1
                return
            self._queue.append(event)
            first = len(self._queue) == 1
        if first:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the link's thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="monitor-link", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued (within ``timeout`` s, if connected), then close; what
        could not be sent is counted in ``dropped``, as is everything submitted later."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the link's thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._disconnect()
            with self._lock:  # never sent (stopped while the monitor was away): counted
                self.dropped += len(self._queue)
                self._queue.clear()

    def _loop(self) -> None:
        wait = _RETRY[0]
        sent_keys: object = None
        warned = False
        while True:
            if self._sock is not None and not (self._reader and self._reader.is_alive()):
                self._disconnect()  # the monitor closed the connection: connect again
            if self._sock is None:
                if self._stop.is_set():
                    return
                try:
                    self._connect()
                except OSError as exc:
                    if not warned:
                        _log.warning(
                            "monitor link: cannot reach the monitor process (%s); retrying",
                            type(exc).__name__,
                        )
                        warned = True
                    self._stop.wait(wait)
                    wait = min(wait * 2, _RETRY[1])
                    continue
                if warned:
                    _log.info("monitor link: connected to the monitor process again")
                wait, warned, sent_keys = _RETRY[0], False, None
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
            if not batch:
                if self._stop.is_set():
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            keys = self._keys()
            frames = []
            if keys != sent_keys:
                frames.append(encode(("keys", keys) if keys is not None else ("forget",)))
            frames.append(encode(("events", [_packed(event) for event in batch])))
            try:
                assert self._sock is not None
                with self._sending:
                    self._sock.sendall(b"".join(frames))
            except OSError as exc:
                with self._lock:
                    self.dropped += len(batch)
                _log.warning("monitor link: the connection failed (%s)", type(exc).__name__)
                self._disconnect()
                continue
            sent_keys = keys

    def _keys(self) -> bytes | None:
        try:
            return self._material()
        except Exception as exc:  # sealed or storage trouble: the monitor keeps no state
            _log.debug("monitor link: no key material (%s)", type(exc).__name__)
            return None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            sock.connect(self._address.socket)
            sock.sendall(self._address.cookie)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.connected = True
        self._reader = threading.Thread(
            target=self._read, args=(sock,), name="monitor-link-reader", daemon=True
        )
        self._reader.start()

    def _read(self, sock: socket.socket) -> None:
        """Hand the monitor's messages to ``on_message`` until the connection ends (the
        link's thread then closes the socket: only it ever does, once this has ended)."""
        frames = FrameReader(sock.fileno(), chunk=1 << 16, max_frame=16 << 20)
        while True:
            try:
                messages = frames.read()
            except (EOFError, OSError, FrameError):
                break
            for found in messages:
                number: object = None
                message = found
                if found[0] == "alerts" and len(found) == 4:  # to acknowledge
                    number, message = found[3], found[:3]
                try:
                    self._on_message(message)
                except Exception as exc:  # an alert the worker could not take: logged
                    _log.error("monitor link: a message failed (%s)", type(exc).__name__)
                if number is not None and not self._ack(sock, number):
                    break
        self.connected = False
        self._wake.set()  # the link's thread reconnects

    def _ack(self, sock: socket.socket, number: object) -> bool:
        """Tell the monitor the ``alerts`` numbered ``number`` were taken (handed to
        ``on_message``); ``False`` if the connection failed."""
        try:
            with self._sending:
                sock.sendall(encode(("ack", number)))
        except OSError:
            return False
        return True

    def _disconnect(self) -> None:
        """End the connection (the link's thread only): shut it down, let the reader end,
        then close the socket, so no thread ever uses a descriptor number reused since."""
        sock, self._sock = self._sock, None
        self.connected = False
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not None:
            self._reader.join(5.0)
            self._reader = None
        sock.close()


def _packed(event: AuditEvent) -> tuple[object, ...]:
    """``pack_event(event)`` without the token and the request body."""
    packed = list(pack_event(event))
    packed[_TOKEN] = None
    packed[_DATA] = None
    return tuple(packed)
