"""Audit device and alert channel settings: arrays of tables in the config file.

Scalar audit settings (``audit.node``, ``audit.timeout``, ``audit.file``, ...)
go through the generic setting table in ``server.config``; this module parses
the arrays of tables, which only a config file can hold::

    [[audit.device]]
    type = "file"                  # file | database | syslog | http | stdout
    name = "primary"               # default: the type; unique
    required = true                # a request needs one required device to accept it
                                   # (default true; false for syslog and stdout, which are
                                   # not durable; never true for udp syslog: unconfirmed)
    path = "/var/log/medsecrets/audit.jsonl"   # file
    max_bytes = 104857600          # file: rotate at this size (0: never)
    rotate_interval = 86400.0      # file: rotate after this many seconds (0: never)
    keep = 0                       # file: rotated files to keep (0: all)
    encrypt = "medessence/production/medical-encryption#audit_log_encryption_key"
    address = "udp://127.0.0.1:514"  # syslog (or /dev/log, tcp://host:port; port 1-65535)
    facility = "auth"              # syslog
    url = "https://siem.example/ingest"   # http
    spool_dir = ""                 # http: default <data_dir>/audit-spool/<name>; new, empty
                                   # or a spool, and one device's only
    spool_max_bytes = 268435456    # http: at least 1 MiB
    batch_size = 500               # http: lines per POST
    batch_max_bytes = 1048576      # http: bytes per POST (4 KiB to 64 MiB)
    timeout = 5.0                  # http: seconds per POST in all (0 < timeout <= 60)
    ca_file = "/etc/medsecrets/siem-ca.pem"   # http (https URL): the only CAs the SIEM's
                                   # certificate may chain to (default: the system store);
                                   # a readable regular PEM file. Never "verification off"
    headers = { Authorization = "Splunk ...", X-Tenant = "icu" }   # http: sent with
                                   # every POST; values are secrets (never echoed)
    headers_file = "/etc/medsecrets/siem-headers"   # http: more headers, "Name: value"
                                   # lines ('#' comments), read at every start; ours or
                                   # root's, mode 0600/0640 (read_headers_file)

    [[alerts.channel]]
    type = "webhook"               # slack | webhook | smtp | log
    url = "https://hooks.example/alerts"   # slack, webhook: https (http only to loopback)
    secret = "..."                 # webhook: HMAC signing secret (never echoed)
    host = "smtp.example"          # smtp
    port = 587
    sender = "medsecrets@example"  # smtp: plain addresses (local@domain, no name, no spaces)
    recipients = ["secops@example"]
    starttls = true                # smtp: the default; false sends alerts in clear
    username = ""
    password = ""                  # never echoed

Every key is checked; an error names the table entry (``audit.device[2].url``)
and the rule, never a secret value.

SIEM headers (``headers`` and ``headers_file``, together at most
``MAX_HEADERS``): names are RFC 7230 tokens, unique ignoring case, never one
the forwarder owns (``Host``, ``Content-Type``, ``Content-Length``, framing and
connection headers: ``RESERVED_HEADERS``); values are printable ASCII (no
CR, LF, NUL or other control character, no leading or trailing space), 1 to
``MAX_HEADER_VALUE`` characters. They go only to an ``https`` URL (or plain
``http`` to loopback), and an ``Authorization`` header not with credentials in
the URL. An error names ``audit.device[N].headers.<name>`` (or the file and
line) and never a value; ``AuditDeviceSettings`` keeps values out of its repr.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from medsecrets.audit.spool import unusable_reason
from medsecrets.audit.syslog import ADDRESS_FORMS, FACILITIES, transport_of
from medsecrets.errors import ConfigError
from medsecrets.fdio import open_regular
from medsecrets.monitor.channels import (
    check_alert_url,
    check_email_address,
    check_http_url,
    is_loopback,
)
from medsecrets.sensitive import SecretFields

__all__ = [
    "AlertChannelSettings",
    "AuditDeviceSettings",
    "cleartext_warnings",
    "device_headers",
    "parse_alert_channels",
    "parse_audit_devices",
    "read_headers_file",
    "secret_settings",
]

DeviceType = Literal["file", "database", "syslog", "http", "stdout"]
ChannelType = Literal["slack", "webhook", "smtp", "log"]


def _no_headers() -> SecretFields:
    return SecretFields({})


@dataclass(frozen=True, slots=True)
class AuditDeviceSettings:
    """One ``[[audit.device]]`` entry (paths absolute after loading); ``url`` and the
    header values stay out of reprs. ``headers`` are the config file's, ``file_headers``
    those its ``headers_file`` held when the settings were loaded (``read_headers_file``;
    not a key of the config file): ``device_headers`` gives all a device sends, so every worker
    sends the same, and a worker started later needs no file that may have changed since."""

    type: DeviceType
    name: str
    required: bool = True
    path: str = ""
    max_bytes: int = 100 * 1024 * 1024
    rotate_interval: float = 0.0
    keep: int = 0
    encrypt: str = ""
    address: str = "/dev/log"
    facility: str = "auth"
    url: str = field(default="", repr=False)
    spool_dir: str = ""
    spool_max_bytes: int = 256 * 1024 * 1024
    batch_size: int = 500
    batch_max_bytes: int = 1024 * 1024
    timeout: float = 5.0
    ca_file: str = ""
    headers: SecretFields = field(default_factory=_no_headers, repr=False)
    headers_file: str = ""
    file_headers: SecretFields = field(default_factory=_no_headers, repr=False)


def device_headers(spec: AuditDeviceSettings) -> dict[str, str]:
    """The headers the http device ``spec`` sends: its ``headers`` and ``file_headers``,
    checked together at load (module docstring); no file is read."""
    return {**spec.headers, **spec.file_headers}


@dataclass(frozen=True, slots=True)
class AlertChannelSettings:
    """One ``[[alerts.channel]]`` entry; ``url``, ``secret`` and ``password`` stay out of reprs."""

    type: ChannelType
    name: str
    url: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    host: str = ""
    port: int = 25
    sender: str = ""
    recipients: tuple[str, ...] = ()
    starttls: bool = True
    username: str = ""
    password: str = field(default="", repr=False)


_DEVICE_KEYS: dict[str, tuple[type, tuple[str, ...]]] = {
    "type": (str, ()),
    "name": (str, ()),
    "required": (bool, ()),
    "path": (str, ("file",)),
    "max_bytes": (int, ("file",)),
    "rotate_interval": (float, ("file",)),
    "keep": (int, ("file",)),
    "encrypt": (str, ("file",)),
    "address": (str, ("syslog",)),
    "facility": (str, ("syslog",)),
    "url": (str, ("http",)),
    "spool_dir": (str, ("http",)),
    "spool_max_bytes": (int, ("http",)),
    "batch_size": (int, ("http",)),
    "batch_max_bytes": (int, ("http",)),
    "timeout": (float, ("http",)),
    "ca_file": (str, ("http",)),
    "headers": (dict, ("http",)),
    "headers_file": (str, ("http",)),
}
_CHANNEL_KEYS: dict[str, tuple[type, tuple[str, ...]]] = {
    "type": (str, ()),
    "name": (str, ()),
    "url": (str, ("slack", "webhook")),
    "secret": (str, ("webhook",)),
    "host": (str, ("smtp",)),
    "port": (int, ("smtp",)),
    "sender": (str, ("smtp",)),
    "recipients": (list, ("smtp",)),
    "starttls": (bool, ("smtp",)),
    "username": (str, ("smtp",)),
    "password": (str, ("smtp",)),
}
_SECRET_KEYS = frozenset({"url", "secret", "password", "headers", "headers_file"})
"""Keys whose values errors never echo (``headers_file``: a header line pasted there)."""
_FACILITIES = frozenset(FACILITIES)
_MIN_SPOOL_BYTES: Final = 1 << 20
_BATCH_BYTES: Final = (4 << 10, 64 << 20)
_MAX_TIMEOUT: Final = 60.0
MAX_HEADERS: Final = 32
MAX_HEADER_VALUE: Final = 8192
MAX_HEADERS_FILE_BYTES: Final = 64 << 10
RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
"""Headers the forwarder (or HTTP framing) owns: never set by the configuration."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")


def _entries(raw: object, where: str, source: str) -> list[Mapping[str, object]]:
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise ConfigError(f"setting {where!r} ({source}): must be an array of tables [[{where}]]")
    return raw


def _typed(
    entry: Mapping[str, object],
    keys: Mapping[str, tuple[type, tuple[str, ...]]],
    kinds: tuple[str, ...],
    where: str,
    source: str,
) -> dict[str, object]:
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in kinds:
        raise ConfigError(f"setting '{where}.type' ({source}): must be one of " + ", ".join(kinds))
    values: dict[str, object] = {}
    for key, raw in entry.items():
        spec = keys.get(key)
        name = f"{where}.{key}"
        if spec is None:
            raise ConfigError(f"setting {name!r} ({source}): unknown setting")
        expected, only = spec
        if only and kind not in only:
            raise ConfigError(f"setting {name!r} ({source}): not a setting of {kind} entries")
        value = raw
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if expected is float and isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf: nan compared false with every bound (a rotation never due)
            raise ConfigError(f"setting {name!r} ({source}): must be a finite number, got {value}")
        if not ok:
            shown = "" if key in _SECRET_KEYS else f", got {value!r}"[:70]
            kind_name = "table" if expected is dict else expected.__name__
            raise ConfigError(f"setting {name!r} ({source}): must be a {kind_name}{shown}")
        values[key] = value
    return values


def _check_name(values: dict[str, object], seen: set[str], where: str, source: str) -> str:
    name = values.get("name", values["type"])
    assert isinstance(name, str)
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise ConfigError(
            f"setting '{where}.name' ({source}): letters, digits, '-' and '_' (1 to 64)"
        )
    if name in seen:
        raise ConfigError(f"setting '{where}.name' ({source}): {name!r} is used twice")
    seen.add(name)
    values["name"] = name
    return name


def parse_audit_devices(raw: object, source: str) -> tuple[AuditDeviceSettings, ...]:
    """The ``[[audit.device]]`` entries, checked (see module docstring)."""
    found: list[AuditDeviceSettings] = []
    seen: set[str] = set()
    spools: dict[str, str] = {}  # explicit spool_dir -> the device using it
    for index, entry in enumerate(_entries(raw, "audit.device", source)):
        where = f"audit.device[{index}]"
        values = _typed(entry, _DEVICE_KEYS, ("file", "database", "syslog", "http", "stdout"),
                        where, source)  # fmt: skip
        _check_name(values, seen, where, source)
        kind = values["type"]
        if kind == "file" and not values.get("path"):
            raise ConfigError(f"setting '{where}.path' ({source}): required for file devices")
        if kind == "http":
            _check_http(values, spools, where, source)
        if kind == "syslog":
            _check_syslog(values, where, source)
        for key in ("max_bytes", "keep", "rotate_interval"):
            number = values.get(key)
            if isinstance(number, int | float) and number < 0:
                raise ConfigError(f"setting '{where}.{key}' ({source}): must not be negative")
        encrypt = values.get("encrypt")
        if isinstance(encrypt, str) and encrypt and "#" not in encrypt:
            raise ConfigError(f"setting '{where}.encrypt' ({source}): must be SECRET_PATH#FIELD")
        # syslog and stdout only hand records over (not fsync'd): optional unless asked for
        values.setdefault("required", kind not in ("syslog", "stdout"))
        found.append(AuditDeviceSettings(**values))  # type: ignore[arg-type]
    return tuple(found)


def _check_http(values: dict[str, object], spools: dict[str, str], where: str, source: str) -> None:
    """An http device's URL, bounds and spool directory (one device's, never a foreign one)."""
    url = values.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"setting '{where}.url' ({source}): an http(s) URL is required")
    check_http_url(f"setting '{where}.url' ({source})", url)
    batch_size = values.get("batch_size", 1)
    if isinstance(batch_size, int) and batch_size <= 0:
        raise ConfigError(f"setting '{where}.batch_size' ({source}): must be positive")
    spool_max = values.get("spool_max_bytes", _MIN_SPOOL_BYTES)
    if isinstance(spool_max, int) and spool_max < _MIN_SPOOL_BYTES:
        raise ConfigError(
            f"setting '{where}.spool_max_bytes' ({source}): must be at least "
            f"{_MIN_SPOOL_BYTES} (1 MiB)"
        )
    batch_bytes = values.get("batch_max_bytes", _BATCH_BYTES[0])
    if isinstance(batch_bytes, int) and not _BATCH_BYTES[0] <= batch_bytes <= _BATCH_BYTES[1]:
        raise ConfigError(
            f"setting '{where}.batch_max_bytes' ({source}): must be from "
            f"{_BATCH_BYTES[0]} (4 KiB) to {_BATCH_BYTES[1]} (64 MiB)"
        )
    timeout = values.get("timeout", 1.0)
    if isinstance(timeout, float) and not 0 < timeout <= _MAX_TIMEOUT:
        raise ConfigError(
            f"setting '{where}.timeout' ({source}): seconds per POST, more than 0 and at "
            f"most {_MAX_TIMEOUT:g}"
        )
    _check_trust(values, url, where, source)
    _check_headers(values, url, where, source)
    spool_dir = values.get("spool_dir")
    if not isinstance(spool_dir, str) or not spool_dir:
        return
    key = os.path.normpath(os.path.abspath(spool_dir))
    if key in spools:
        raise ConfigError(
            f"setting '{where}.spool_dir' ({source}): already the spool of device {spools[key]!r}"
        )
    spools[key] = str(values["name"])
    reason = None
    with contextlib.suppress(OSError):  # unreadable: the spool says why when it opens
        reason = unusable_reason(Path(key))
    if reason is not None:
        raise ConfigError(f"setting '{where}.spool_dir' ({source}): {spool_dir!r} {reason}")


def _check_trust(values: dict[str, object], url: str, where: str, source: str) -> None:
    """``ca_file``: an https URL's only trusted CAs, a PEM bundle that loads (made absolute)."""
    from medsecrets.cabundle import ca_context

    ca_file = values.get("ca_file")
    if not isinstance(ca_file, str):
        return
    name = f"setting '{where}.ca_file' ({source})"
    if not ca_file:
        raise ConfigError(f"{name}: must name a PEM file (leave it out for the system store)")
    if not url.startswith("https://"):
        raise ConfigError(f"{name}: only for an https url")
    try:
        ca_context(ca_file)
    except ValueError as exc:
        raise ConfigError(f"{name}: {ca_file!r} {exc}") from None
    values["ca_file"] = os.path.abspath(ca_file)


def _check_headers(values: dict[str, object], url: str, where: str, source: str) -> None:
    """``headers`` (made ``SecretFields``) and ``headers_file`` (made absolute, read now:
    ``file_headers``): the rules in the module docstring, never echoing a value."""
    raw = values.get("headers", {})
    assert isinstance(raw, dict)
    table: dict[str, str] = {}

    def named(name: str) -> str:
        shown = f".{name}" if _TOKEN.fullmatch(name) else ""  # never a pasted "Name: value"
        return f"setting '{where}.headers{shown}' ({source})"

    for name, value in raw.items():
        checked = _checked_header(name, value, named)
        _refuse_twice(name, [*table, name], named)
        table[name] = checked
    values["headers"] = SecretFields(table)
    headers_file = values.get("headers_file")
    if isinstance(headers_file, str):
        if not headers_file:
            raise ConfigError(f"setting '{where}.headers_file' ({source}): must name a file")
        values["headers_file"] = os.path.abspath(headers_file)
    every = siem_headers(url, table, str(values.get("headers_file", "")), where, source)
    values["file_headers"] = SecretFields({k: v for k, v in every.items() if k not in table})


def siem_headers(
    url: str, table: Mapping[str, str], headers_file: str, where: str, source: str = ""
) -> dict[str, str]:
    """The headers an http device sends: its ``headers`` (``table``, each checked already)
    and those of its ``headers_file`` (read now: ``read_headers_file``), checked together
    (module docstring): ``ConfigError`` naming ``setting 'where.headers...'`` otherwise.
    Called at load (``file_headers``); a device built later takes ``device_headers``."""
    headers = dict(table)
    at = f" ({source})" if source else ""
    if headers_file:
        for name, value in read_headers_file(headers_file, f"{where}.headers_file", source).items():
            _refuse_twice(name, [*headers, name], lambda n: f"setting '{where}.headers.{n}'{at}")
            headers[name] = value
    if not headers:
        return headers
    shown = f"setting '{where}.headers'{at}"
    if len(headers) > MAX_HEADERS:
        raise ConfigError(f"{shown}: at most {MAX_HEADERS} headers")
    if "authorization" in (n.lower() for n in headers) and _has_credentials(url):
        raise ConfigError(
            f"{shown}: an Authorization header, and credentials in the url too (basic auth): "
            "give one or the other"
        )
    parts = urlsplit(url)
    if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
        raise ConfigError(
            f"{shown}: headers carry credentials: only to an https url (plain http only to a "
            "loopback host)"
        )
    return headers


def _refuse_twice(name: str, names: Collection[str], named: Callable[[str], str]) -> None:
    """``ConfigError`` if ``name`` (in ``names``) is there twice, ignoring case."""
    if sum(n.lower() == name.lower() for n in names) > 1:
        raise ConfigError(
            f"{named(name)}: given twice (header names ignore case; headers and headers_file "
            "count together)"
        )


def _checked_header(name: object, value: object, named: Callable[[str], str]) -> str:
    """``value`` if ``name: value`` is a header the configuration may set (module
    docstring); else ``ConfigError`` starting with ``named(name)`` and saying the rule, never
    the value. A name that is not a token is never shown (``named("")``): it may be a whole
    pasted ``Name: value`` line, or hold a line break."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigError(
            f"{named('')}: the header name is not an RFC 7230 token (letters, digits and "
            "!#$%&'*+-.^_`|~)"
        )
    if name.lower() in RESERVED_HEADERS:
        raise ConfigError(f"{named(name)}: set by the forwarder itself, not by the configuration")
    if not isinstance(value, str):
        raise ConfigError(f"{named(name)}: the value must be a string")
    if len(value) > MAX_HEADER_VALUE or not _VALUE.fullmatch(value):
        raise ConfigError(
            f"{named(name)}: the value must be 1 to {MAX_HEADER_VALUE} printable ASCII "
            "characters (no CR, LF, NUL or other control character, no leading or trailing "
            "space)"
        )
    return value


def read_headers_file(path: str, where: str, source: str = "") -> dict[str, str]:
    """The headers of the ``headers_file`` at ``path``: ``Name: value`` lines (LF or CRLF
    endings, an UTF-8 BOM allowed; blank lines and ``#`` comments skipped, space around the
    value dropped), at least one, each checked as a ``headers`` entry. A symlink is
    followed; the file itself must be regular, at most ``MAX_HEADERS_FILE_BYTES`` of UTF-8,
    owned by the server's user or root, and grant nothing to other users nor write to its
    group (chmod 600, 640 for a group): checked on the file opened, not on the name.

    ``ConfigError`` naming ``setting 'where'`` (and ``source``), the line and a valid
    header name: never a value, nor the text of a line that is not a header, nor ``path``
    (a header line pasted where the path belongs would be echoed).
    """
    setting = f"setting '{where}'" + (f" ({source})" if source else "")
    try:
        with open_regular(path) as handle:
            _check_owner_and_mode(os.fstat(handle.fileno()), setting)
            data = handle.read(MAX_HEADERS_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{setting}: cannot read the file ({reason})") from None
    if len(data) > MAX_HEADERS_FILE_BYTES:
        raise ConfigError(f"{setting}: the file is larger than {MAX_HEADERS_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: the file is not UTF-8 text") from None
    headers: dict[str, str] = {}
    # only LF ends a line (str.splitlines also splits at CR, VT, FF, U+0085, U+2028...,
    # which would turn one bad value into two headers)
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.removesuffix("\r").strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        name, colon, value = stripped.partition(":")

        def named(shown: str, number: int = number) -> str:
            return f"{setting}: line {number}" + (f" ({shown})" if _TOKEN.fullmatch(shown) else "")

        if not colon:
            raise ConfigError(f"{named('')}: not 'Name: value'")
        checked = _checked_header(name, value.strip(" \t"), named)
        _refuse_twice(name, [*headers, name], named)
        headers[name] = checked
    if not headers:
        raise ConfigError(f"{setting}: the file holds no header")
    return headers


def _check_owner_and_mode(status: os.stat_result, setting: str) -> None:
    """``ConfigError`` unless a secret file (``status``) belongs to us or root and only its
    owner may change it and its owner and group alone may read it (mode 0640 at most)."""
    mode = stat.S_IMODE(status.st_mode)
    fix = "chmod 600 it (640 for a group)"
    if mode & 0o007:
        raise ConfigError(f"{setting}: other users may read the file (mode {mode:04o}); {fix}")
    if mode & 0o020:
        raise ConfigError(f"{setting}: its group may change the file (mode {mode:04o}); {fix}")
    if status.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"{setting}: the file belongs to another user (uid {status.st_uid}), who may "
            "change it or let others read it: chown it to the server's user (or root)"
        )


def _check_syslog(values: Mapping[str, object], where: str, source: str) -> None:
    """A syslog device's facility and address; a UDP device is never required."""
    if values.get("facility", "auth") not in _FACILITIES:
        raise ConfigError(f"setting '{where}.facility' ({source}): must be a syslog facility name")
    address = values.get("address", "/dev/log")
    transport = transport_of(address) if isinstance(address, str) else None
    if transport is None:
        raise ConfigError(f"setting '{where}.address' ({source}): must be {ADDRESS_FORMS}")
    if transport == "udp" and values.get("required") is True:
        raise ConfigError(
            f"setting '{where}.required' ({source}): a udp syslog device cannot be required "
            "(UDP delivery is never confirmed)"
        )


def _check_smtp(values: Mapping[str, object], where: str, source: str) -> None:
    """The rules ``SmtpChannel`` enforces, named after the entry (never echoing a value)."""
    port = values.get("port", 25)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"setting '{where}.port' ({source}): must be from 1 to 65535")
    check_email_address(f"setting '{where}.sender' ({source})", values.get("sender"))
    recipients = values.get("recipients")
    assert isinstance(recipients, list)
    for recipient in recipients:
        check_email_address(f"setting '{where}.recipients' ({source})", recipient)
    username, password = values.get("username"), values.get("password")
    if bool(username) != bool(password):
        raise ConfigError(f"setting '{where}' ({source}): give both username and password")
    starttls = values.get("starttls", True)  # the default: never in clear unless asked
    if password and not starttls and not is_loopback(str(values.get("host"))):
        raise ConfigError(
            f"setting '{where}.starttls' ({source}): required to send a password to a remote server"
        )


def parse_alert_channels(raw: object, source: str) -> tuple[AlertChannelSettings, ...]:
    """The ``[[alerts.channel]]`` entries, checked (see module docstring)."""
    found: list[AlertChannelSettings] = []
    seen: set[str] = set()
    for index, entry in enumerate(_entries(raw, "alerts.channel", source)):
        where = f"alerts.channel[{index}]"
        values = _typed(entry, _CHANNEL_KEYS, ("slack", "webhook", "smtp", "log"), where, source)
        _check_name(values, seen, where, source)
        kind = values["type"]
        if kind in ("slack", "webhook"):
            url = values.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigError(f"setting '{where}.url' ({source}): an https URL is required")
            check_alert_url(f"setting '{where}.url' ({source})", url)
        if kind == "webhook" and len(str(values.get("secret", ""))) < 16:
            raise ConfigError(
                f"setting '{where}.secret' ({source}): a signing secret of 16+ characters"
            )
        if kind == "smtp":
            recipients = values.get("recipients", [])
            assert isinstance(recipients, list)
            if not values.get("host") or not values.get("sender") or not recipients:
                raise ConfigError(
                    f"setting '{where}' ({source}): smtp needs host, sender and recipients"
                )
            _check_smtp(values, where, source)
            values["recipients"] = tuple(recipients)
        found.append(AlertChannelSettings(**values))  # type: ignore[arg-type]
    return tuple(found)


def secret_settings(
    devices: tuple[AuditDeviceSettings, ...], channels: tuple[AlertChannelSettings, ...]
) -> list[str]:
    """The names of the entries' settings that hold a secret: a channel's ``secret``,
    ``password`` and ``url`` (a Slack URL is its token), a device URL with credentials
    (``https://user:token@siem/...``, sent as HTTP basic auth) and a device's ``headers``
    (``headers_file`` is another file, refused when other users may read it)."""
    found: list[str] = []
    for index, device in enumerate(devices):
        if device.url and _has_credentials(device.url):
            found.append(f"audit.device[{index}].url")
        if device.headers:
            found.append(f"audit.device[{index}].headers")
    for index, channel in enumerate(channels):
        found += [
            f"alerts.channel[{index}].{key}"
            for key in ("url", "secret", "password")
            if getattr(channel, key)
        ]
    return found


def _has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.username is not None or parts.password is not None


def cleartext_warnings(devices: tuple[AuditDeviceSettings, ...]) -> list[str]:
    """One warning per device that sends the audit trail over a network in clear.

    An ``http`` device with a plain ``http://`` URL to a host that is not loopback (alert
    URLs are refused so; a SIEM URL is warned about instead, so that configurations that
    started before still start), and a ``syslog`` device to a remote ``udp://`` or
    ``tcp://`` host (syslog here has no TLS: send to ``/dev/log`` and let the local syslog
    daemon relay over TLS). Records hold HMACs, not values, but also principals, paths,
    addresses and times.
    """
    warnings: list[str] = []
    for index, device in enumerate(devices):
        where = f"audit.device[{index}]"
        if device.type == "http":
            parts = urlsplit(device.url)
            if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
                warnings.append(
                    f"audit device {device.name!r} ({where}.url) ships the audit trail in "
                    "clear (plain http to a host that is not loopback): use an https URL"
                )
        elif device.type == "syslog" and transport_of(device.address) in ("udp", "tcp"):
            host = urlsplit(device.address).hostname or ""
            if not is_loopback(host):
                warnings.append(
                    f"audit device {device.name!r} ({where}.address) sends the audit trail "
                    "in clear to a remote syslog host (syslog has no TLS here): send it to "
                    "/dev/log and let the local syslog daemon relay it over TLS"
                )
    return warnings
