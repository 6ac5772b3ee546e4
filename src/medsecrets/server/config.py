"""Server settings: one TOML file, ``MEDSECRETS_*`` environment variables, CLI flags.

Precedence, lowest to highest: built-in defaults < the TOML file < environment
variables < overrides (command-line flags). Every setting is typed and
validated here, once, at start; the first bad setting raises ``ConfigError``
whose one-line message names the setting and where it came from (never a
value that could be secret, such as the PostgreSQL DSN).

TOML layout (every key optional; unknown keys and tables are rejected)::

    listen = "127.0.0.1:8200"
    data_dir = ".medsecrets"
    dev = false
    tls_disable = false
    catalog_file = "catalog.yaml"
    log_level = "info"
    log_file = ""                 # empty: stderr
    max_body_bytes = 1048576
    workers = 1
    request_timeout = 30.0
    header_read_timeout = 5.0     # a request head (and an idle keep-alive connection)
    max_connections = 1024        # per worker (granian)
    listen_backlog = 1024
    shutdown_grace_period = 10.0
    sweep_interval = 3600.0
    backend = "granian"           # granian | uvicorn

    [storage]
    type = "sqlite"               # sqlite | postgres
    path = ""                     # sqlite file; default <data_dir>/medsecrets.db
    dsn = ""                      # postgres connection string
    timeout = 5.0                 # postgres: wait for a connection, and for each answer

    [seal]
    type = ""                     # "" (as initialised) | shamir | keyfile | awskms
    key_file = ""                 # keyfile: default <data_dir>/unseal.key
    kms_key_id = ""
    kms_region = "us-east-1"
    kms_endpoint_url = ""

    [tls]
    cert_file = ""
    key_file = ""
    client_ca = ""

Each setting ``a.b`` is also read from ``MEDSECRETS_A_B`` (``storage.dsn`` from
``MEDSECRETS_STORAGE_DSN``, ``workers`` from ``MEDSECRETS_WORKERS``); an empty
variable counts as unset. The ``MEDSECRETS_`` namespace is shared with the CLI
and SDK (``MEDSECRETS_ADDR``, ``MEDSECRETS_TOKEN``, ...): variables that name no
server setting are ignored, and those that are not known client variables are
reported in ``Settings.warnings``. Relative paths are resolved against the
working directory at load time. See ``docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, cast

from medsecrets.audit.checkpoint import CHECKPOINT_EVERY
from medsecrets.errors import ConfigError
from medsecrets.monitor.detectors import DetectorConfig
from medsecrets.server.auditconfig import (
    AlertChannelSettings,
    AuditDeviceSettings,
    cleartext_warnings,
    parse_alert_channels,
    parse_audit_devices,
    secret_settings,
)

if TYPE_CHECKING:  # medsecrets.seal pulls in the crypto stack: keep `--help` and errors fast
    pass

__all__ = [
    "CLIENT_ENV_VARS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN",
    "ENV_PREFIX",
    "SETTING_NAMES",
    "AuditSettings",
    "Backend",
    "LogLevel",
    "MonitorSettings",
    "SealSettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "load_settings",
    "parse_listen",
]

ENV_PREFIX = "MEDSECRETS_"
DEFAULT_LISTEN = "127.0.0.1:8200"
DEFAULT_DATA_DIR = ".medsecrets"
#: ``MEDSECRETS_*`` variables that belong to the CLI/SDK (ignored silently here).
CLIENT_ENV_VARS = frozenset(
    {
        "MEDSECRETS_ADDR",
        "MEDSECRETS_TOKEN",
        "MEDSECRETS_CACERT",
        "MEDSECRETS_CONFIG",
        "MEDSECRETS_SERVER_CONFIG",
        "MEDSECRETS_OUTPUT",
        "MEDSECRETS_CLIENT_CERT",
        "MEDSECRETS_CLIENT_KEY",
        "MEDSECRETS_TLS_SERVER_NAME",
        "MEDSECRETS_SKIP_VERIFY",
        "MEDSECRETS_DEBUG",
    }
)

Backend = Literal["granian", "uvicorn"]
LogLevel = Literal["debug", "info", "warning", "error"]
StorageType = Literal["sqlite", "postgres"]
SealTypeSetting = Literal["shamir", "keyfile", "awskms"]

_MAX_BODY_LIMIT = 64 * 1024 * 1024
_MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where the (encrypted) data lives. ``dsn`` is masked in ``repr``: it may hold a password.

    ``timeout`` (PostgreSQL only; 1 to 300 seconds): how long an operation waits for a
    connection, and then for the database's answer, before it fails with ``503
    storage_unavailable`` (``storage.postgres``: also the TCP keepalive and user timeout).
    """

    type: StorageType = "sqlite"
    path: str = ""
    dsn: str = field(default="", repr=False)
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class SealSettings:
    """How the root key is protected; ``type`` ``None`` means "as the store was initialised"."""

    type: SealTypeSetting | None = None
    key_file: str = ""
    kms_key_id: str = ""
    kms_region: str = "us-east-1"
    kms_endpoint_url: str | None = None


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificate and key (PEM; the key PKCS#8) and an optional CA for client certificates."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether a certificate is configured."""
        return self.cert_file is not None


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """The audit trail: devices and chain settings (see ``server.auditconfig`` for devices).

    ``file``, ``database`` and ``stdout`` are shorthands that add a device of that
    type (named after the type) to those of ``[[audit.device]]``; dev mode adds a
    file device in the data directory when none is configured.
    """

    enabled: bool = True
    node: str = ""
    timeout: float = 5.0
    file: str | None = None
    database: bool = False
    stdout: bool = False
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_interval: float = 60.0
    checkpoint_export: str | None = None
    process: bool = True
    own_cpu: bool = True
    process_priority: str = "idle"
    devices: tuple[AuditDeviceSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Anomaly detection on the audit stream (``detectors``: every threshold, from the
    ``monitor.*`` settings named as its fields, but ``rate_threshold`` for ``rate_limit``)
    and alert delivery."""

    enabled: bool = True
    detectors: DetectorConfig = field(default_factory=DetectorConfig)
    dedup_window: float = 300.0
    channels: tuple[AlertChannelSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """Every validated server setting (see the module docstring and docs/configuration.md)."""

    listen: str = DEFAULT_LISTEN
    data_dir: str = DEFAULT_DATA_DIR
    dev: bool = False
    tls_disable: bool = False
    catalog_file: str | None = None
    log_level: LogLevel = "info"
    log_file: str | None = None
    max_body_bytes: int = 1_048_576
    workers: int = 1
    request_timeout: float = 30.0
    header_read_timeout: float = 5.0
    max_connections: int = 1024
    listen_backlog: int = 1024
    shutdown_grace_period: float = 10.0
    sweep_interval: float = 3600.0
    backend: Backend = "granian"
    storage: StorageSettings = field(default_factory=StorageSettings)
    seal: SealSettings = field(default_factory=SealSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    metrics_unauthenticated: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        """The host part of ``listen`` (without IPv6 brackets)."""
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of ``listen``."""
        return parse_listen(self.listen)[1]

    @property
    def scheme(self) -> str:
        """``https`` when TLS is configured, else ``http``."""
        return "https" if self.tls.enabled else "http"

    @property
    def public_addr(self) -> str:
        """The address clients use (``MEDSECRETS_ADDR``); a wildcard host becomes loopback."""
        host, port = parse_listen(self.listen)
        if host in ("0.0.0.0", ""):  # noqa: S104 - mapping a wildcard, not binding it
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{port}"


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); ``ValueError`` naming the problem."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("must be HOST:PORT")
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError("must be [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("must be [IPv6]:PORT with an IPv6 address in the brackets") from None
    else:
        host, _, port_text = value.rpartition(":")
        if not host or ":" in host:
            raise ValueError("must be HOST:PORT (IPv6 as [ADDR]:PORT)")
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError("port must be an integer from 1 to 65535")
    return host, int(port_text)


# -- the setting table -----------------------------------------------------------

_Parser = Callable[[object, bool], object]
"""(raw value, came from a string source) -> typed value; ``ValueError`` with the rule."""


def _str(raw: object, from_text: bool) -> object:
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def _opt_str(raw: object, from_text: bool) -> object:
    value = _str(raw, from_text)
    return value or None


def _bool(raw: object, from_text: bool) -> object:
    if isinstance(raw, bool):
        return raw
    if from_text and isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ValueError("must be true or false")


def _int(low: int, high: int) -> _Parser:
    def parse(raw: object, from_text: bool) -> object:
        value: object = raw
        if from_text and isinstance(raw, str):
            try:
                value = int(raw.strip())
            except ValueError:
                value = None
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    return parse


def _float(low: float, high: float, unit: str = "seconds") -> _Parser:
    def parse(raw: object, from_text: bool) -> object:
        value: object = raw
        if from_text and isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                value = None
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not low <= value <= high
        ):
            raise ValueError(f"must be a number of {unit} from {low:g} to {high:g}")
        return float(value)

    return parse


def _limits(raw: object, from_text: bool) -> object:
    """Names to positive integers: a TOML table, or ``name=N,name=N`` in a variable."""
    if from_text and isinstance(raw, str):
        pairs: list[tuple[str, object]] = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            name, equals, number = item.partition("=")
            if not equals:
                raise ValueError("must be name=N pairs separated by commas")
            pairs.append((name.strip(), number.strip()))
        raw = dict(pairs)
    if not isinstance(raw, dict):
        raise ValueError("must be a table of names to positive integers")
    found: dict[str, int] = {}
    for name, number in raw.items():
        value = _int(1, 1_000_000)(number, from_text)
        if not isinstance(name, str) or not name:
            raise ValueError("must name each principal or category")
        found[name] = cast(int, value)
    return found


def _choice(*choices: str, optional: bool = False) -> _Parser:
    def parse(raw: object, from_text: bool) -> object:
        if optional and raw == "":
            return None
        if not isinstance(raw, str) or raw.strip().lower() not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return raw.strip().lower()

    return parse


def _listen(raw: object, from_text: bool) -> object:
    value = _str(raw, from_text)
    parse_listen(cast(str, value))
    return value


#: dotted setting name -> (parser, secret?)  Secret settings never echo their value.
_SETTINGS: dict[str, tuple[_Parser, bool]] = {
    "listen": (_listen, False),
    "data_dir": (_str, False),
    "dev": (_bool, False),
    "tls_disable": (_bool, False),
    "catalog_file": (_opt_str, False),
    "log_level": (_choice("debug", "info", "warning", "error"), False),
    "log_file": (_opt_str, False),
    "max_body_bytes": (_int(1024, _MAX_BODY_LIMIT), False),
    "workers": (_int(1, _MAX_WORKERS), False),
    "request_timeout": (_float(0.1, 3600.0), False),
    "header_read_timeout": (_float(0.1, 300.0), False),
    "max_connections": (_int(16, 65536), False),
    "listen_backlog": (_int(128, 65535), False),
    "shutdown_grace_period": (_float(0.0, 3600.0), False),
    "sweep_interval": (_float(1.0, 7 * 86400.0), False),
    "backend": (_choice("granian", "uvicorn"), False),
    "storage.type": (_choice("sqlite", "postgres"), False),
    "storage.path": (_str, False),
    "storage.dsn": (_str, True),
    "storage.timeout": (_float(1.0, 300.0), False),
    "seal.type": (_choice("shamir", "keyfile", "awskms", optional=True), False),
    "seal.key_file": (_str, False),
    "seal.kms_key_id": (_str, False),
    "seal.kms_region": (_str, False),
    "seal.kms_endpoint_url": (_opt_str, False),
    "tls.cert_file": (_opt_str, False),
    "tls.key_file": (_opt_str, False),
    "tls.client_ca": (_opt_str, False),
    "metrics_unauthenticated": (_bool, False),
    "audit.enabled": (_bool, False),
    "audit.node": (_str, False),
    "audit.timeout": (_float(0.1, 5.0), False),
    "audit.file": (_opt_str, False),
    "audit.database": (_bool, False),
    "audit.stdout": (_bool, False),
    "audit.checkpoint_every": (_int(1, 100_000_000), False),
    "audit.checkpoint_interval": (_float(1.0, 86400.0), False),
    "audit.checkpoint_export": (_opt_str, False),
    "audit.process": (_bool, False),
    "audit.own_cpu": (_bool, False),
    "audit.process_priority": (_choice("idle", "normal"), False),
    "monitor.enabled": (_bool, False),
    "monitor.rate_threshold": (_int(1, 1_000_000), False),
    "monitor.rate_window": (_float(1.0, 86400.0), False),
    "monitor.rate_principal_limits": (_limits, False),
    "monitor.rate_category_limits": (_limits, False),
    "monitor.bulk_distinct": (_int(1, 1_000_000), False),
    "monitor.bulk_window": (_float(1.0, 86400.0), False),
    "monitor.enumeration_lists": (_int(1, 1_000_000), False),
    "monitor.enumeration_window": (_float(1.0, 86400.0), False),
    "monitor.failed_denials": (_int(1, 1_000_000), False),
    "monitor.failed_window": (_float(1.0, 86400.0), False),
    "monitor.warmup_events": (_int(1, 1_000_000), False),
    "monitor.warmup_days": (_float(0.0, 365.0, "days"), False),
    "monitor.new_source_scope": (_choice("network", "address"), False),
    "monitor.repeat_after": (_float(0.0, 7 * 86400.0), False),
    "monitor.dedup_window": (_float(0.0, 86400.0), False),
}
SETTING_NAMES: tuple[str, ...] = tuple(_SETTINGS)
_DETECTOR_FIELDS = frozenset(f.name for f in dataclasses.fields(DetectorConfig))
_TABLES = frozenset(name.split(".")[0] for name in _SETTINGS if "." in name) | {"alerts"}
#: Arrays of tables (file only): dotted name -> parser of the raw entries.
_ARRAYS: dict[str, Callable[[object, str], tuple[object, ...]]] = {
    "audit.device": parse_audit_devices,
    "alerts.channel": parse_alert_channels,
}


def env_var(name: str) -> str:
    """The variable of setting ``name`` (``storage.dsn`` -> ``MEDSECRETS_STORAGE_DSN``)."""
    return ENV_PREFIX + name.replace(".", "_").upper()


_ENV_TO_SETTING = {env_var(name): name for name in _SETTINGS}


def _fail(name: str, source: str, rule: str, raw: object = None) -> ConfigError:
    secret = _SETTINGS.get(name, (_str, False))[1]
    shown = ""
    if raw is not None and not secret:
        text = repr(raw)
        shown = f", got {text[:60] + '...' if len(text) > 60 else text}"
    return ConfigError(f"setting {name!r} ({source}): {rule}{shown}")


_MAX_CONFIG_BYTES: Final = 1 << 20


def _read_file(path: str) -> tuple[dict[str, tuple[object, str]], int]:
    """The file's settings (name -> (raw value, source)) and its permission bits."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait for good
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path!r}: cannot read it ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"config file {path!r}: not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(_MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {path!r}: cannot read it ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path!r}: larger than 1 MiB")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path!r}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r}: invalid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"config file {path!r}: invalid TOML (nested too deep)") from None
    source = f"config file {os.path.basename(path)}"
    found: dict[str, tuple[object, str]] = {}
    for key, value in document.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                raise _fail(key, source, "must be a table")
            for sub, sub_value in value.items():
                name = f"{key}.{sub}"
                if name in _ARRAYS:
                    found[name] = (_ARRAYS[name](sub_value, source), source)
                    continue
                if name not in _SETTINGS:
                    raise ConfigError(f"setting {name!r} ({source}): unknown setting")
                found[name] = (sub_value, source)
        elif key in _SETTINGS:
            found[key] = (value, source)
        else:
            raise ConfigError(f"setting {key!r} ({source}): unknown setting")
    return found, stat.S_IMODE(mode)


def _exposed_secrets(path: str, found: Mapping[str, tuple[object, str]], mode: int) -> list[str]:
    """A warning when the file holds secret settings and other users may read it.

    Warned, not refused (unlike a TLS key file that other users may read), so that
    configurations that started before still start; every start logs it until fixed.
    """
    if not mode & 0o004:
        return []
    devices = cast(tuple[AuditDeviceSettings, ...], found.get("audit.device", ((), ""))[0])
    channels = cast(tuple[AlertChannelSettings, ...], found.get("alerts.channel", ((), ""))[0])
    names = secret_settings(devices, channels)
    if "storage.dsn" in found:
        names.insert(0, "storage.dsn")
    if not names:
        return []
    return [
        f"config file {path!r} holds secret settings ({', '.join(names)}) and other users "
        f"may read it (mode {mode:04o}): chmod 600 it (640 for a group)"
    ]


def load_settings(
    config_file: str | None,
    *,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    only: tuple[str, ...] = (),
) -> Settings:
    """Merge defaults, ``config_file`` (TOML), ``env`` and ``overrides`` into ``Settings``.

    ``only``: take just the file's settings whose names start with one of these
    (``("monitor.",)`` for a tool that needs the thresholds alone, on a host
    without the server's TLS files or database).

    ``overrides`` maps dotted setting names to typed values (``None`` values are
    skipped: "flag not given"). Raises ``ConfigError`` naming the first bad
    setting and its source. Cross-setting rules: TLS needs both certificate and
    key; without TLS the server starts only with ``dev`` or ``tls_disable``;
    postgres needs ``storage.dsn``; awskms needs ``seal.kms_key_id``; dev mode
    uses SQLite and a key-file seal.
    """
    raw: dict[str, tuple[object, str]] = {}
    warnings: list[str] = []
    if config_file:
        found, mode = _read_file(config_file)
        warnings += _exposed_secrets(config_file, found, mode)
        raw.update(found)
        if only:
            raw = {name: value for name, value in raw.items() if name.startswith(only)}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        setting = _ENV_TO_SETTING.get(var)
        if setting is None:
            if var not in CLIENT_ENV_VARS:
                warnings.append(f"ignoring environment variable {var}: no such server setting")
            continue
        if env[var] == "":
            continue
        raw[setting] = (env[var], f"environment {var}")
    for name, value in overrides.items():
        if name not in _SETTINGS:
            raise ConfigError(f"setting {name!r} (command line): unknown setting")
        if value is not None:
            raw[name] = (value, "command line")

    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, (value, source) in raw.items():
        if name in _ARRAYS:
            values[name] = value
            sources[name] = source
            continue
        parser, _secret = _SETTINGS[name]
        from_text = source.startswith("environment")
        try:
            values[name] = parser(value, from_text)
        except ValueError as exc:
            raise _fail(name, source, str(exc), value) from None
        sources[name] = source
    return _assemble(values, sources, warnings)


def _source(sources: Mapping[str, str], name: str) -> str:
    return sources.get(name, "default")


def _assemble(values: dict[str, object], sources: dict[str, str], warnings: list[str]) -> Settings:
    top = {k: v for k, v in values.items() if "." not in k}
    sub: dict[str, dict[str, object]] = {table: {} for table in _TABLES}
    for name, value in values.items():
        if "." in name:
            table, key = name.split(".", 1)
            sub[table][key] = value

    data_dir = os.path.abspath(cast(str, top.get("data_dir", DEFAULT_DATA_DIR)))
    if not cast(str, top.get("data_dir", "x")):
        raise _fail("data_dir", _source(sources, "data_dir"), "must not be empty")
    top["data_dir"] = data_dir
    for name in ("catalog_file", "log_file"):
        if isinstance(top.get(name), str):
            top[name] = os.path.abspath(cast(str, top[name]))

    storage = StorageSettings(**sub["storage"])  # type: ignore[arg-type]
    if storage.type == "sqlite":
        path = storage.path or os.path.join(data_dir, "medsecrets.db")
        storage = dataclasses.replace(storage, path=os.path.abspath(path))
    elif not storage.dsn:
        raise _fail("storage.dsn", _source(sources, "storage.dsn"), "required for postgres")

    seal = SealSettings(**sub["seal"])  # type: ignore[arg-type]
    if seal.type == "keyfile":
        key_file = seal.key_file or os.path.join(data_dir, "unseal.key")
        seal = dataclasses.replace(seal, key_file=os.path.abspath(key_file))
    elif seal.key_file:  # dev mode records it at its first start: never relative to a cwd
        seal = dataclasses.replace(seal, key_file=os.path.abspath(seal.key_file))
    if seal.type == "awskms" and not seal.kms_key_id:
        raise _fail(
            "seal.kms_key_id", _source(sources, "seal.kms_key_id"), "required for awskms seals"
        )
    if seal.type == "awskms" and not seal.kms_region:
        raise _fail("seal.kms_region", _source(sources, "seal.kms_region"), "must not be empty")

    audit_values = sub["audit"]
    audit_values["devices"] = audit_values.pop("device", ())
    for name in ("file", "checkpoint_export"):
        if isinstance(audit_values.get(name), str):
            audit_values[name] = os.path.abspath(cast(str, audit_values[name]))
    audit = AuditSettings(**audit_values)  # type: ignore[arg-type]
    audit = dataclasses.replace(
        audit,
        devices=tuple(
            dataclasses.replace(
                d,
                path=os.path.abspath(d.path) if d.path else "",
                spool_dir=os.path.abspath(d.spool_dir) if d.spool_dir else "",
            )
            for d in audit.devices
        ),
    )
    monitor_values = sub["monitor"]
    monitor_values["channels"] = sub["alerts"].pop("channel", ())
    thresholds = {
        ("rate_limit" if name == "rate_threshold" else name): monitor_values.pop(name)
        for name in list(monitor_values)
        if name == "rate_threshold" or name in _DETECTOR_FIELDS
    }
    monitor = MonitorSettings(
        detectors=DetectorConfig(**thresholds),  # type: ignore[arg-type]
        **monitor_values,  # type: ignore[arg-type]
    )

    tls = TlsSettings(**sub["tls"])  # type: ignore[arg-type]
    tls = TlsSettings(
        cert_file=os.path.abspath(tls.cert_file) if tls.cert_file else None,
        key_file=os.path.abspath(tls.key_file) if tls.key_file else None,
        client_ca=os.path.abspath(tls.client_ca) if tls.client_ca else None,
    )
    settings = Settings(
        **top,  # type: ignore[arg-type]
        storage=storage,
        seal=seal,
        tls=tls,
        audit=audit,
        monitor=monitor,
        warnings=(*warnings, *cleartext_warnings(audit.devices)),
    )
    _check(settings, sources)
    return settings


def _check(settings: Settings, sources: dict[str, str]) -> None:
    tls = settings.tls
    if tls.cert_file and not tls.key_file:
        raise _fail("tls.key_file", _source(sources, "tls.key_file"), "required with tls.cert_file")
    if tls.key_file and not tls.cert_file:
        raise _fail(
            "tls.cert_file", _source(sources, "tls.cert_file"), "required with tls.key_file"
        )
    if tls.client_ca and not tls.cert_file:
        raise _fail(
            "tls.client_ca", _source(sources, "tls.client_ca"), "needs tls.cert_file and key_file"
        )
    for name, path in (
        ("tls.cert_file", tls.cert_file),
        ("tls.key_file", tls.key_file),
        ("tls.client_ca", tls.client_ca),
        ("catalog_file", settings.catalog_file),
    ):
        if path is not None and not os.path.isfile(path):
            raise _fail(name, _source(sources, name), "no such file", path)
    if not tls.enabled and not settings.dev and not settings.tls_disable:
        raise _fail(
            "tls.cert_file",
            _source(sources, "tls.cert_file"),
            "TLS is required: set tls.cert_file and tls.key_file, "
            "or tls_disable = true, or start with --dev",
        )
    if settings.dev:
        if settings.storage.type != "sqlite":
            raise _fail("storage.type", _source(sources, "storage.type"), "dev mode uses sqlite")
        if settings.seal.type not in (None, "keyfile"):
            raise _fail("seal.type", _source(sources, "seal.type"), "dev mode uses a keyfile seal")
    if not settings.audit.enabled and not settings.dev:
        raise _fail(
            "audit.enabled",
            _source(sources, "audit.enabled"),
            "audit can be switched off only in dev mode (no audit, no secret)",
        )
    if settings.workers > 1 and settings.seal.type == "shamir":
        raise _fail(
            "workers",
            _source(sources, "workers"),
            "more than one worker needs an auto-unseal seal (keyfile or awskms)",
        )
    if settings.workers > 1 and settings.backend != "granian":
        raise _fail("workers", _source(sources, "workers"), "more than one worker needs granian")
