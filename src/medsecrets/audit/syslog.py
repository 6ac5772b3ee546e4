"""``SyslogAuditDevice``: audit records as RFC 5424 syslog messages.

One message per record; its MSG is the record line without the trailing
newline, so a collector receives the exact, verifiable line::

    <38>1 2026-01-01T00:00:00.000000Z host medsecrets 4242 request - {"prev":...}

- PRI is ``facility * 8 + severity``: severity ``warning`` for ``alert``
  records, ``info`` for every other record; MSGID is the record's ``kind``.
- ``address`` chooses the transport: a local datagram socket (``"/dev/log"``,
  any absolute path or ``"unix:///path"``, as served by journald, rsyslog and
  syslog-ng), ``"udp://host:port"`` (RFC 5426) or ``"tcp://host:port"``
  (RFC 6587 octet-counting framing: ``"<length> <message>"``). The port
  defaults to 514 (port 0 is refused); IPv6 hosts are written in brackets.
- Durable accept means "handed to the kernel": ``write`` returns once every
  message was sent and raises ``AuditFailure`` on any socket error or after
  ``timeout`` seconds. Records are never truncated, which would break the
  chain: a batch with a message larger than a datagram can carry (UDP:
  65507 bytes, 65527 over IPv6; a local socket: its send buffer less 32)
  fails before any of its messages is sent, so the collector never holds
  part of a batch that is then chained again.
- Connecting is lazy (first ``write``), so a collector that is down at start
  only fails writes until it is back. A datagram that fails is retried once
  on a fresh socket (a restarted local daemon); a TCP connection that the
  collector has closed is replaced before sending.

This device cannot read records back: ``open`` returns ``ChainHead()``.
"""

from __future__ import annotations

import datetime as dt
import os
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from medsecrets.audit.device import ChainHead
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import AuditFailure, ConfigError

__all__ = ["ADDRESS_FORMS", "FACILITIES", "SyslogAuditDevice", "transport_of"]

FACILITIES: Final = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
"""RFC 5424 facility names and codes."""

_WARNING: Final = 4
_INFO: Final = 6
_DEFAULT_PORT: Final = 514
_UDP_PAYLOAD: Final = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
_UNIX_OVERHEAD: Final = 32  # Linux refuses a local datagram longer than SO_SNDBUF - 32
_KIND_MARK: Final = b',"kind":"'

Transport = Literal["unix", "udp", "tcp"]
ADDRESS_FORMS: Final = (
    "an absolute socket path, unix:///path, udp://host:port or tcp://host:port (port 1-65535)"
)


@dataclass(frozen=True, slots=True)
class _Address:
    transport: Transport
    target: str
    port: int = 0


def _printable(value: str, limit: int) -> bool:
    """RFC 5424 PRINTUSASCII, 1 to ``limit`` characters."""
    return 0 < len(value) <= limit and all(33 <= ord(c) <= 126 for c in value)


def _parse(address: str) -> _Address | None:
    """What ``address`` names (see module docstring); ``None`` if it is no address."""
    if address.startswith("/"):
        return _Address("unix", address)
    parts = urlsplit(address)
    if parts.scheme == "unix" and parts.path.startswith("/") and not parts.netloc:
        return _Address("unix", parts.path)
    if parts.scheme in ("udp", "tcp") and parts.hostname and parts.path in ("", "/"):
        try:
            port = _DEFAULT_PORT if parts.port is None else parts.port
        except ValueError:  # not a number, or past 65535
            return None
        if port > 0:
            transport: Transport = "udp" if parts.scheme == "udp" else "tcp"
            return _Address(transport, parts.hostname, port)
    return None


def transport_of(address: str) -> Transport | None:
    """``"unix"``, ``"udp"`` or ``"tcp"``: how ``address`` is reached; ``None`` if invalid."""
    parsed = _parse(address)
    return parsed.transport if parsed is not None else None


def _parse_address(name: str, address: str) -> _Address:
    parsed = _parse(address)
    if parsed is None:
        raise ConfigError(f"audit device {name!r}: address must be {ADDRESS_FORMS}")
    return parsed


class SyslogAuditDevice:
    """An ``AuditDevice`` that sends records to syslog (see module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        address: str = "/dev/log",
        facility: str = "auth",
        tag: str = "medsecrets",
        timeout: float = 5.0,
        hostname: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Configure the device (no connection yet); ``ConfigError`` names a bad setting.

        ``tag`` is the APP-NAME (1-48 printable ASCII characters); ``hostname``
        defaults to this host's name.
        """
        if facility not in FACILITIES:
            raise ConfigError(f"audit device {name!r}: unknown syslog facility {facility!r}")
        if not _printable(tag, 48):
            raise ConfigError(f"audit device {name!r}: tag must be 1-48 printable ASCII characters")
        if timeout <= 0:
            raise ConfigError(f"audit device {name!r}: timeout must be positive")
        self._name = name
        self._address = _parse_address(name, address)
        self._facility = FACILITIES[facility]
        self._tag = tag
        self._timeout = timeout
        host = hostname if hostname is not None else socket.gethostname()
        self._hostname = host if _printable(host, 255) else "-"
        self._clock = clock or SystemClock()
        self._socket: socket.socket | None = None
        self._open = False

    def __repr__(self) -> str:
        where = self._address.target
        if self._address.port:
            where = f"{self._address.transport}://{where}:{self._address.port}"
        return f"SyslogAuditDevice({self._name!r}, address={where!r})"

    @property
    def name(self) -> str:
        """The device's configured name."""
        return self._name

    def open(self) -> ChainHead:
        """Mark the device usable (connecting is lazy); a new chain: ``ChainHead()``."""
        self._open = True
        return ChainHead()

    def write(self, lines: Sequence[bytes]) -> None:
        """Send one syslog message per line; ``AuditFailure`` on any socket error."""
        if not self._open:
            raise AuditFailure(f"audit device {self._name!r} is not open")
        messages = self._messages(lines)
        try:
            if self._address.transport == "tcp":
                self._send_stream(messages)
            else:
                self._send_datagrams(messages)
        except OSError as exc:
            self._disconnect()
            reason = exc.strerror or type(exc).__name__
            message = f"audit device {self._name!r}: syslog send failed: {reason}"
            raise AuditFailure(message) from None

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._open = False
        self._disconnect()

    # -- internals ----------------------------------------------------------------------------

    def _messages(self, lines: Sequence[bytes]) -> list[bytes]:
        stamp = self._clock.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rest = f" {stamp} {self._hostname} {self._tag} {os.getpid()} ".encode()
        out = []
        for line in lines:
            kind = _kind(line)
            severity = _WARNING if kind == b"alert" else _INFO
            pri = b"<%d>1" % (self._facility * 8 + severity)
            out.append(pri + rest + kind + b" - " + line.rstrip(b"\n"))
        return out

    def _send_stream(self, messages: list[bytes]) -> None:
        sock = self._socket
        if sock is not None and not _still_connected(sock):
            self._disconnect()
            sock = None
        if sock is None:
            sock = self._connect()
        sock.sendall(b"".join(b"%d %s" % (len(m), m) for m in messages))

    def _send_datagrams(self, messages: list[bytes]) -> None:
        sock = self._socket or self._connect()
        limit = _datagram_limit(sock)
        longest = max(map(len, messages), default=0)
        if longest > limit:
            raise AuditFailure(
                f"audit device {self._name!r}: a {longest}-byte syslog message does not fit in "
                f"a datagram (at most {limit} bytes); none of the batch was sent"
            )
        retried = False
        index = 0
        while index < len(messages):
            try:
                sock.send(messages[index])
            except OSError:
                if retried:
                    raise
                retried = True
                self._disconnect()
                sock = self._connect()
                continue
            index += 1

    def _connect(self) -> socket.socket:
        address = self._address
        if address.transport == "tcp":
            sock = socket.create_connection((address.target, address.port), self._timeout)
        else:
            family: int
            target: str | tuple[object, ...]
            if address.transport == "udp":
                found = socket.getaddrinfo(address.target, address.port, type=socket.SOCK_DGRAM)
                family, kind, proto, _, target = found[0]
            else:
                family, kind, proto, target = socket.AF_UNIX, socket.SOCK_DGRAM, 0, address.target
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._timeout)
                sock.connect(target)
            except OSError:
                sock.close()
                raise
        self._socket = sock
        return sock

    def _disconnect(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


def _kind(line: bytes) -> bytes:
    """The record's ``kind`` (the MSGID), or ``-`` for a line that is not a record."""
    start = line.find(_KIND_MARK, 0, 160)
    if start < 0:
        return b"-"
    start += len(_KIND_MARK)
    end = line.find(b'"', start, start + 33)
    kind = line[start:end] if end > start else b""
    return kind if kind.isalpha() else b"-"


def _datagram_limit(sock: socket.socket) -> int:
    """The longest datagram ``sock`` can send (see module docstring)."""
    if sock.family == socket.AF_UNIX:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - _UNIX_OVERHEAD
    return _UDP_PAYLOAD.get(sock.family, _UDP_PAYLOAD[socket.AF_INET])


def _still_connected(sock: socket.socket) -> bool:
    """Whether a TCP peer that never sends has not closed or reset the connection."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False
