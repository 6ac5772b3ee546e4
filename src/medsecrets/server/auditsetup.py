"""Assemble the audit trail and the monitor from ``Settings``: ``build_audit``.

Devices come from ``[[audit.device]]`` plus the shorthands ``audit.file``,
``audit.database`` and ``audit.stdout``; dev mode with none configured writes a
file device at ``<data_dir>/audit/audit.jsonl`` and exports checkpoints to
``<data_dir>/audit/checkpoints.jsonl``, so a new user sees the log at once.
Without any device (and not in dev mode) the broker refuses every request but
the health probes: no audit, no secret.

In a multi-worker server every worker process keeps its own chain: its node id
is ``<node>-<pid>`` and its file devices write ``<stem>-<pid>.jsonl``.

The monitor (detectors off the request path) and the alert dispatcher are
built here too; every alert is itself written to the audit trail.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medsecrets.audit.broker import AuditBroker
from medsecrets.audit.checkpoint import CHECKPOINT_EVERY
from medsecrets.audit.device import AuditDevice
from medsecrets.audit.keys import BarrierKeySource
from medsecrets.audit.lane import AuditLane, Lane
from medsecrets.audit.readback import Unreadable
from medsecrets.audit.record import AuditEvent, Salter, format_time
from medsecrets.errors import (
    ConfigError,
    InvalidRequest,
    MedsecretsError,
    NotFoundError,
    SealedError,
)
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.channels import (
    AlertChannel,
    LogChannel,
    SlackChannel,
    SmtpChannel,
    WebhookChannel,
)
from medsecrets.monitor.detectors import DETECTOR_NAMES, DetectorSet
from medsecrets.monitor.dispatcher import AlertDispatcher
from medsecrets.monitor.engine import MonitorEngine
from medsecrets.monitor.history import KEY_LABEL as HISTORY_KEY
from medsecrets.monitor.history import AlertHistory
from medsecrets.monitor.sealed import derived_key
from medsecrets.monitor.state import StateKeeper, state_key
from medsecrets.schema.audit import (
    AlertList,
    AuditDeviceHealth,
    AuditDevices,
    AuditHash,
    AuditPublicKey,
    AuditRead,
    AuditReads,
    AuditRecords,
    AuditVerification,
)
from medsecrets.server.auditconfig import (
    AlertChannelSettings,
    AuditDeviceSettings,
    device_headers,
)
from medsecrets.server.auditprocess import AlertReceiver, monitor_settings
from medsecrets.server.config import Settings
from medsecrets.server.monitorlink import MonitorLink, link_from_env
from medsecrets.store import SecretStore

__all__ = ["AuditStack", "build_audit", "check_audit_paths", "device_settings"]

log = logging.getLogger("medsecrets.server")

_READ_NEEDLE = b'"operation":"secrets.read"'
"""Every record ``who-read`` counts holds this text (``render_line``'s JSON)."""


@dataclass
class AuditStack:
    """The broker (the core's audit hook), its key source and the monitor parts."""

    broker: AuditBroker | None
    """``None`` only in dev mode with ``audit.enabled = false``."""
    keys: BarrierKeySource
    node: str
    monitor: MonitorEngine | None = None
    detectors: DetectorSet | None = None
    dispatcher: AlertDispatcher | None = None
    alerts_in: AlertReceiver | None = None
    """With the detectors in an audit process or the shared monitor process (a worker
    of a multi-worker server): where their alerts arrive."""
    link: MonitorLink | None = None
    """A worker's feed to the shared monitor process (``server.monitorlink``)."""
    history: AlertHistory | None = None
    """The dispatcher's recent alerts across restarts (``None``: not kept)."""
    checkpoint_every: int = CHECKPOINT_EVERY
    """``audit.checkpoint_every``: ``verify`` allows one more unsigned records at a tail."""
    file_paths: dict[str, Path] = field(default_factory=dict)
    """Each file device's configured path (a worker writes ``<stem>-<pid>``): its chains'
    files are found from it (``audit.readback.file_chains``)."""

    def start(self) -> None:
        """Open the devices, start writers, the monitor and the dispatcher."""
        if self.broker is not None:
            self.broker.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        if self.history is not None:
            self.history.start()
        if self.monitor is not None:
            self.monitor.start()
        if self.link is not None:
            self.link.start()

    def stop(self) -> None:
        """Stop the monitor and dispatcher, then flush and close every device."""
        if self.link is not None:
            self.link.stop(2.0)
        parts: list[MonitorEngine | AlertDispatcher | None] = [self.monitor, self.dispatcher]
        for part in parts:
            if part is None:
                continue
            try:
                part.stop(2.0)
            except Exception as exc:  # shutting down: report, keep closing the rest
                log.warning("stopping %s failed (%s)", type(part).__name__, type(exc).__name__)
        if self.history is not None:
            self.history.stop()
        if self.broker is not None:
            self.broker.stop()

    # -- counters for metrics ----------------------------------------------------------
    def anomaly_counts(self) -> dict[str, int]:
        """Alerts raised so far, by detector (every detector of ``DETECTOR_NAMES``, zero
        included: in the audit process's mode, counts arrive with its alerts)."""
        if self.alerts_in is not None:
            return dict.fromkeys(DETECTOR_NAMES, 0) | self.alerts_in.counts
        return dict(self.detectors.counts) if self.detectors is not None else {}

    def dropped_events(self) -> int:
        """Audit events the monitor dropped (queue full; the audit process's detectors run
        on every batch it writes and drop none; a worker's link drops when its queue is
        full, and loses what was in flight when the monitor process went away)."""
        if self.link is not None:
            return self.link.dropped
        return self.monitor.dropped if self.monitor is not None else 0

    def alert_counts(self) -> dict[tuple[str, str], int]:
        """Alert deliveries by (channel, status)."""
        if self.dispatcher is None:
            return {}
        channels = self.dispatcher.stats()["channels"]
        assert isinstance(channels, dict)
        found: dict[tuple[str, str], int] = {}
        for channel, counts in channels.items():
            for status in ("sent", "failed", "rate_limited", "dropped"):
                found[(str(channel), status)] = int(counts.get(status, 0))
        return found

    def alert_pending(self) -> dict[str, int]:
        """Alert deliveries not yet sent or given up, by channel."""
        if self.dispatcher is None:
            return {}
        channels = self.dispatcher.stats()["channels"]
        assert isinstance(channels, dict)
        return {str(channel): int(counts.get("pending", 0)) for channel, counts in channels.items()}

    def unaudited_alerts(self) -> int:
        """Alerts that never reached the audit trail: the dispatcher's audit hook calls
        dropped (queue full) or failed, and malformed alerts from the audit process
        (every alert must be audited: one that could not be must be visible)."""
        found = 0
        if self.dispatcher is not None:
            found += int(self.dispatcher.stats()["hook_failures"])  # type: ignore[call-overload]
        if self.alerts_in is not None:
            found += self.alerts_in.malformed
        return found

    # -- the operator's view (core.audit.AuditAdmin) -------------------------------
    def _broker(self) -> AuditBroker:
        if self.broker is None:
            raise NotFoundError("audit is switched off (dev mode)")
        return self.broker

    def hash(self, value: str, device: str | None) -> AuditHash:
        """The HMAC ``device`` writes for ``value``."""
        name, digest = self._broker().hash(value, device)
        return AuditHash(device=name, hash=digest)

    def devices(self) -> AuditDevices:
        """Health of every device."""
        return AuditDevices(
            devices=tuple(
                AuditDeviceHealth(
                    name=str(h["name"]),
                    required=bool(h["required"]),
                    up=bool(h["up"]),
                    records=int(h["records"]),  # type: ignore[call-overload]
                    failures=int(h["failures"]),  # type: ignore[call-overload]
                    dropped=int(h["dropped"]),  # type: ignore[call-overload]
                    pending=int(h["pending"]),  # type: ignore[call-overload]
                    seq=int(h["seq"]),  # type: ignore[call-overload]
                    last_error=_text(h["last_error"]),
                    spool_pending=_count(h.get("spool_pending")),
                    delivery_error=_text(h.get("delivery_error")),
                    delivery_failures=_count(h.get("delivery_failures")),
                    last_delivered_at=_text(h.get("last_delivered_at")),
                )
                for h in self._broker().health()
            )
        )

    def _readable(
        self, *, since: dt.datetime | None = None, needle: bytes | None = None
    ) -> tuple[str, Iterator[Mapping[str, object]], Unreadable]:
        """The first device that can be read back, the records of every chain it holds
        merged by time (``audit.readback``: every worker's and node's), and the count of
        lines that could not be read. ``since`` and ``needle`` only let files and lines be
        skipped unread: the caller still filters."""
        from medsecrets.audit.database import DatabaseAuditDevice
        from medsecrets.audit.file import FileAuditDevice
        from medsecrets.audit.readback import (
            chain_start,
            database_nodes,
            database_records,
            file_chains,
            file_records,
            line_decoder,
            merged,
            merged_in_turn,
        )

        lane = self._readable_lane(None)
        device = lane.device
        unreadable = Unreadable()
        if isinstance(device, DatabaseAuditDevice):
            storage = device.storage
            nodes = [
                database_records(storage, lane.name, node, unreadable=unreadable)
                for node in database_nodes(storage, lane.name)
            ]
            return lane.name, merged(nodes), unreadable
        assert isinstance(device, FileAuditDevice)
        decode = line_decoder(device.cipher)
        # A chain's files are opened once the merge reaches its first record: every worker
        # of every earlier run left a chain, and opening them all at once ran out of file
        # descriptors.
        chains = merged_in_turn(
            (
                chain_start(chain, decode=decode),
                functools.partial(
                    file_records,
                    chain,
                    decode=decode,
                    unreadable=unreadable,
                    since=since,
                    needle=needle,
                ),
            )
            for chain in file_chains(self.file_paths.get(lane.name, device.path))
        )
        return lane.name, chains, unreadable

    def search(self, filters: Mapping[str, object], limit: int) -> AuditRecords:
        """Matching records, oldest first, at most ``limit``."""
        from medsecrets.audit.query import AuditQuery, search

        query = AuditQuery(**filters)  # type: ignore[arg-type]
        name, records, unreadable = self._readable(since=query.since)
        found: list[Mapping[str, object]] = []
        truncated = False
        for record in search(records, query):
            if len(found) == limit:
                truncated = True
                break
            found.append(record)
        return AuditRecords(
            device=name, records=tuple(found), truncated=truncated, unreadable=unreadable.lines
        )

    def who_read(self, path: str, since: dt.datetime | None) -> AuditReads:
        """Every successful read of ``path`` since ``since``."""
        from medsecrets.audit.query import who_read

        name, records, unreadable = self._readable(since=since, needle=_READ_NEEDLE)
        rows = who_read(records, path, since)
        return AuditReads(
            device=name,
            path=path,
            reads=tuple(
                AuditRead(
                    time=format_time(row.time),
                    principal=row.principal,
                    accessor=row.accessor,
                    remote=row.remote,
                    user_agent=row.user_agent,
                    path=row.path,
                    version=row.version,
                    request_id=row.request_id,
                )
                for row in rows
            ),
            unreadable=unreadable.lines,
        )

    def verify(self, device: str | None) -> AuditVerification:
        """Check a readable device's chain from its first record, and its checkpoints.

        A database device and a file device that keeps every rotated file must
        start at the genesis record; a file device that prunes rotated files
        (``keep``) starts wherever its oldest file does. Checkpoint signatures
        are checked with this server's key, and the chain's tail against the
        exported checkpoints (a truncated log is caught).
        """
        from medsecrets.audit.checkpoint import load_public_key, read_checkpoints
        from medsecrets.audit.database import DatabaseAuditDevice
        from medsecrets.audit.device import ChainHead
        from medsecrets.audit.file import FileAuditDevice
        from medsecrets.audit.record import LineError
        from medsecrets.audit.verify import verify

        lane = self._readable_lane(device)
        pem = self.keys.public_key_pem()
        key = load_public_key(pem) if pem is not None else None
        export = lane.checkpoint_export
        try:
            checkpoints = (
                read_checkpoints(export, node=self.node, device=lane.name)
                if export is not None and export.exists()
                else []
            )
        except (LineError, OSError) as exc:  # torn, tampered, replaced or unreadable
            problem = exc if isinstance(exc, LineError) else type(exc).__name__
            return _unverifiable(lane, f"exported checkpoints unreadable: {problem}")
        found = lane.device
        if isinstance(found, DatabaseAuditDevice):
            report = verify(
                found.records(),
                public_key=key,
                checkpoints=checkpoints,
                start=ChainHead(),
                unsigned_tail=self.checkpoint_every + 1,
            )
        else:
            assert isinstance(found, FileAuditDevice)
            lines, decode = _file_lines(lane)
            try:
                report = verify(
                    lines,
                    public_key=key,
                    checkpoints=checkpoints,
                    start=ChainHead() if found.keeps_everything else None,
                    decode=decode,
                    unsigned_tail=self.checkpoint_every + 1,
                )
            except _UnreadableFile as exc:
                return _unverifiable(lane, f"audit file unreadable: {exc}")
        return AuditVerification(
            device=lane.name,
            ok=report.ok,
            records=report.records,
            checkpoints_verified=report.checkpoints_verified,
            first_bad_index=report.first_bad_index,
            first_bad_seq=report.first_bad_seq,
            problem=report.problem,
            last_seq=report.last_seq,
        )

    def _readable_lane(self, device: str | None) -> AuditLane:
        from medsecrets.audit.database import DatabaseAuditDevice
        from medsecrets.audit.file import FileAuditDevice

        lanes = self._broker().lanes
        if device is None:  # a database device first (indexed keys), else a file device
            for kind in (DatabaseAuditDevice, FileAuditDevice):
                for lane in lanes:
                    if isinstance(lane.device, kind):
                        return lane
        for lane in lanes:
            readable = isinstance(lane.device, DatabaseAuditDevice | FileAuditDevice)
            if lane.name == device:
                if not readable:
                    raise InvalidRequest(
                        f"audit device {device!r} cannot be read back (file and database can)"
                    )
                return lane
        if device is None:
            raise NotFoundError("no audit device that can be read back (file or database)")
        raise NotFoundError(f"no audit device named {device!r}")

    def public_key(self) -> AuditPublicKey:
        """The checkpoint signing key."""
        from medsecrets.audit.checkpoint import key_id_of, load_public_key

        pem = self.keys.public_key_pem()
        if pem is None:
            raise SealedError
        return AuditPublicKey(key_id=key_id_of(load_public_key(pem)), public_key_pem=pem.decode())

    def alerts(self, limit: int) -> AlertList:
        """Recent alerts, newest first."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return AlertList(alerts=())
        if self.history is not None:
            self.history.restore()
        return AlertList(alerts=tuple(dispatcher.recent(limit)))

    def alarm(self, device: str, message: str) -> None:
        """An audit device's own alarm (a SIEM spool overflowing): a critical alert."""
        log.error("audit device alarm", extra={"device": device, "detail": message})
        if self.dispatcher is not None:
            self.dispatcher.raise_(
                Alert(
                    detector="audit_device",
                    severity="critical",
                    time=dt.datetime.now(dt.UTC),
                    summary=f"audit device {device}: {message}",
                    key=device,
                )
            )

    def record_alert(self, alert: Alert) -> None:
        """Write an ``alert`` record to every device (nobody waits for it)."""
        if self.broker is not None:
            self.broker.record(
                AuditEvent(kind="alert", time=alert.time, extra={"alert": alert.to_dict()})
            )
        if self.history is not None:
            self.history.changed()


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _unverifiable(lane: AuditLane, problem: str) -> AuditVerification:
    """A failed verification of ``lane`` before any record was checked, saying why."""
    return AuditVerification(
        device=lane.name,
        ok=False,
        records=0,
        checkpoints_verified=0,
        first_bad_index=None,
        first_bad_seq=None,
        problem=problem,
        last_seq=0,
    )


class _UnreadableFile(Exception):
    """A file of a device's chain that verification cannot read (the message names it)."""


def _file_lines(lane: AuditLane) -> tuple[Iterator[bytes], Callable[[bytes], bytes] | None]:
    """The complete lines of a live file device's own chain (oldest file first), streamed,
    and their decoder (sealed lines opened, plain ones as they are: a device switched to
    encryption holds both).

    The device may be appending or rotating meanwhile: a torn last line is left
    out and a file renamed away between listing and reading is skipped. A file that
    is not a regular file (a FIFO put in the directory would block, a device never
    end) or holds a line over ``readback.MAX_LINE_BYTES`` raises ``_UnreadableFile``
    while the lines are read, naming it: the chain cannot be verified.
    """
    from medsecrets.audit.file import FileAuditDevice
    from medsecrets.audit.readback import line_decoder, numbered_lines
    from medsecrets.audit.record import LineError
    from medsecrets.fdio import NotRegularFileError, open_regular

    device = lane.device
    assert isinstance(device, FileAuditDevice)
    paths = device.files()

    def lines() -> Iterator[bytes]:
        for path in paths:
            try:
                handle = open_regular(path)
            except FileNotFoundError:
                continue
            except NotRegularFileError:
                raise _UnreadableFile(f"{path.name}: not a regular file") from None
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise _UnreadableFile(f"{path.name}: {reason}") from None
            with handle:
                try:
                    for _, line in numbered_lines(handle, Path(path.name)):
                        if not line.endswith(b"\n"):
                            break  # a torn last line: being written
                        yield line
                except LineError as exc:
                    raise _UnreadableFile(str(exc)) from None

    return lines(), line_decoder(device.cipher)


def device_settings(settings: Settings) -> tuple[AuditDeviceSettings, ...]:
    """Every configured device, shorthands and the dev-mode default included."""
    audit = settings.audit
    if not audit.enabled:
        return ()
    devices = list(audit.devices)
    if audit.file:
        devices.append(AuditDeviceSettings(type="file", name="file", path=audit.file))
    if audit.database:
        devices.append(AuditDeviceSettings(type="database", name="database"))
    if audit.stdout:
        devices.append(AuditDeviceSettings(type="stdout", name="stdout", required=False))
    if not devices and settings.dev:
        path = os.path.join(settings.data_dir, "audit", "audit.jsonl")
        devices.append(AuditDeviceSettings(type="file", name="file", path=path))
    names = [d.name for d in devices]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"setting 'audit.device': the name {name!r} is used twice")
    return tuple(devices)


def check_audit_paths(settings: Settings) -> None:
    """Make sure every file device's directory exists (created 0700 if missing) and can be
    written, before the store is opened or dev mode sets anything up: ``ConfigError``
    naming the setting (``audit.file``, or the ``audit.device`` by its name) otherwise.
    The device still opens its file at start; this only moves the common mistakes (a
    directory that cannot exist, or is not ours to write) ahead of any change."""
    for device in device_settings(settings):
        if device.type != "file":
            continue
        where = (
            "setting 'audit.file'"
            if device.path == settings.audit.file
            else f"setting 'audit.device' {device.name!r}"
        )
        directory = os.path.dirname(device.path) or "."
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise ConfigError(f"{where}: {directory!r} is not a directory")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{where}: cannot create the directory {directory!r}"
                f" ({exc.strerror or type(exc).__name__})"
            ) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"{where}: cannot write in {directory!r}")


def _state_path(settings: Settings, worker: bool) -> Path | None:
    """Where the detectors' state is kept across restarts (``monitor.state``); ``None``
    with ``workers > 1``: a worker has no identity that outlives it (its pid names its
    audit file), so its state could never be found again."""
    return None if worker else Path(settings.data_dir, "monitor", "detectors.state")


def _keeper(
    detectors: DetectorSet,
    settings: Settings,
    specs: Sequence[AuditDeviceSettings],
    keys: BarrierKeySource,
    *,
    worker: bool,
) -> StateKeeper | None:
    """The in-process detectors' ``StateKeeper``: the state sealed with the key the
    audit process would use (the first file device's, else the first device's)."""
    path = _state_path(settings, worker)
    salter = _salter(specs, keys)
    if path is None or salter is None:
        return None
    return StateKeeper(detectors, path, state_key(salter))


def _salter(
    specs: Sequence[AuditDeviceSettings], keys: BarrierKeySource
) -> Callable[[], Salter | None] | None:
    """The ``Salter`` of the device whose key seals the monitor's files: the first file
    device's (the one whose audit process runs the detectors), else the first device's;
    ``None`` without a device."""
    device = _state_device(specs)
    if device is None:
        return None
    name: str = device

    def salter() -> Salter | None:
        found = keys(name)
        return found.salter if found is not None else None

    return salter


def _state_device(specs: Sequence[AuditDeviceSettings]) -> str | None:
    """The device whose key seals the monitor's files: the first file device (the one
    whose audit process runs the detectors), else the first device; ``None`` without."""
    return next((s.name for s in specs if s.type == "file"), specs[0].name if specs else None)


def _hmac_key(
    specs: Sequence[AuditDeviceSettings], keys: BarrierKeySource
) -> Callable[[], bytes | None]:
    """``_state_device``'s HMAC key, for the shared monitor process (``None`` while
    sealed or without a device)."""
    device = _state_device(specs)

    def key() -> bytes | None:
        found = keys.material(device) if device is not None else None
        return found[0] if found is not None else None

    return key


def _checkpoint_export(settings: Settings) -> Path | None:
    if settings.audit.checkpoint_export:
        return Path(settings.audit.checkpoint_export)
    if settings.dev and not settings.audit.devices and not settings.audit.file:
        return Path(settings.data_dir, "audit", "checkpoints.jsonl")
    return None


def _per_worker(path: str, worker: bool) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}-{os.getpid()}{p.suffix}") if worker else p


def _entry(spec: AuditDeviceSettings, settings: Settings) -> str:
    """How errors name ``spec``'s entry: ``audit.device[N]`` (a shorthand: ``audit.device``)."""
    devices = settings.audit.devices
    return f"audit.device[{devices.index(spec)}]" if spec in devices else "audit.device"


def _encryption_key(store: SecretStore, spec: AuditDeviceSettings, settings: Settings) -> bytes:
    """The audit log encryption key of the file device ``spec``, named by its ``encrypt``
    (``SECRET_PATH#FIELD``, 64 hex digits); a ``ConfigError`` names the entry
    (``audit.device[N].encrypt``)."""
    where = f"{_entry(spec, settings)}.encrypt"
    path, _, name = spec.encrypt.partition("#")
    if not store.status().initialized:
        raise ConfigError(
            f"setting '{where}': the store is not initialised yet: start without it, "
            f"initialise the store, write the key to {path!r}, then add it (docs/audit.md)"
        )
    try:
        version = store.secrets.get(path)
    except MedsecretsError as exc:
        raise ConfigError(f"setting '{where}': cannot read {path!r} ({exc.code})") from None
    value = version.fields.get(name)
    if value is None:
        raise ConfigError(f"setting '{where}': {path!r} has no field {name!r}")
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"setting '{where}': {path}#{name} is not hex") from None
    if len(key) != 32:
        raise ConfigError(f"setting '{where}': {path}#{name} is not 32 bytes")
    return key


def _deferred(store: SecretStore) -> bool:
    """Whether encrypted file devices defer reading their key: the store is initialised but
    sealed at start (a Shamir seal), so the key, a secret in it, is read at the first
    write after the unseal (``FileAuditDevice(cipher_source=)``)."""
    return store.barrier.sealed and store.status().initialized


def _device(
    spec: AuditDeviceSettings,
    settings: Settings,
    store: SecretStore,
    keys: BarrierKeySource,
    *,
    node: str,
    worker: bool,
    alarm: Callable[[str, str], None],
) -> AuditDevice:
    if spec.type == "file":
        from medsecrets.audit.crypt import RecordCipher, deferred_cipher
        from medsecrets.audit.file import FileAuditDevice

        deferred = keys.defers(spec.name)
        cipher = (
            RecordCipher(_encryption_key(store, spec, settings))
            if spec.encrypt and not deferred
            else None
        )
        name = spec.name

        def source() -> RecordCipher | None:
            return deferred_cipher(keys.cipher(name))

        return FileAuditDevice(
            spec.name,
            _per_worker(spec.path, worker),
            max_bytes=spec.max_bytes,
            rotate_interval=spec.rotate_interval,
            keep=spec.keep,
            cipher=cipher,
            cipher_source=source if deferred else None,
        )
    if spec.type == "database":
        from medsecrets.audit.database import DatabaseAuditDevice

        return DatabaseAuditDevice(spec.name, store.storage, node=node)
    if spec.type == "syslog":
        from medsecrets.audit.syslog import SyslogAuditDevice

        return SyslogAuditDevice(spec.name, address=spec.address, facility=spec.facility)
    if spec.type == "http":
        from medsecrets.audit.forwarder import HttpForwarderDevice

        spool = spec.spool_dir or os.path.join(settings.data_dir, "audit-spool", spec.name)
        # as read and checked at load: a worker respawned while the file is being replaced
        # (or gone) must still build its device, or granian stops the whole server
        headers = device_headers(spec)
        return HttpForwarderDevice(
            spec.name,
            url=spec.url,
            spool_dir=_per_worker(spool, worker),
            spool_max_bytes=spec.spool_max_bytes,
            batch_size=spec.batch_size,
            batch_max_bytes=spec.batch_max_bytes,
            timeout=spec.timeout,
            headers=headers,
            verify_tls=spec.ca_file or True,  # never False: verification is not optional
            on_overflow=lambda message: alarm(spec.name, message),
        )
    from medsecrets.audit.stdout import StdoutAuditDevice

    return StdoutAuditDevice(spec.name)


def _lane(
    spec: AuditDeviceSettings,
    settings: Settings,
    store: SecretStore,
    keys: BarrierKeySource,
    *,
    node: str,
    worker: bool,
    alarm: Callable[[str, str], None],
    export: Path | None,
    alerts: AlertReceiver | None = None,
    cpus: frozenset[int] | None = None,
) -> AuditLane:
    """The lane of one device: a file device in an audit process with ``audit.process``
    (which also runs the detectors when given where their ``alerts`` go), placed on
    ``cpus`` if given (``server.placement``), under ``SCHED_IDLE`` with
    ``audit.process_priority = "idle"``."""
    audit = settings.audit
    if spec.type == "file" and audit.process:
        from medsecrets.audit.remote import RemoteLane
        from medsecrets.audit.sidecar import LaneConfig

        config = LaneConfig(
            name=spec.name,
            path=str(_per_worker(spec.path, worker)),
            node=node,
            max_bytes=spec.max_bytes,
            rotate_interval=spec.rotate_interval,
            keep=spec.keep,
            cipher_key=(
                _encryption_key(store, spec, settings)
                if spec.encrypt and not keys.defers(spec.name)
                else None
            ),
            cipher_deferred=keys.defers(spec.name),
            timeout=audit.timeout,
            checkpoint_every=audit.checkpoint_every,
            checkpoint_interval=audit.checkpoint_interval,
            checkpoint_export=str(export) if export is not None else None,
            monitor=(
                monitor_settings(
                    store.catalog,
                    detectors=settings.monitor.detectors,
                    state_path=(str(state) if (state := _state_path(settings, worker)) else None),
                )
                if alerts is not None
                else None
            ),
            log_level=settings.log_level,
            log_file=settings.log_file,
        )
        return RemoteLane(
            config,
            key_material=keys.material,
            required=spec.required,
            entry="medsecrets.server.auditprocess"
            if alerts is not None
            else "medsecrets.audit.sidecar",
            on_message=alerts,
            cpus=cpus,
            idle=audit.process_priority == "idle",
        )
    return Lane(
        _device(spec, settings, store, keys, node=node, worker=worker, alarm=alarm),
        node=node,
        keys=keys,
        required=spec.required,
        timeout=audit.timeout,
        checkpoint_every=audit.checkpoint_every,
        checkpoint_interval=audit.checkpoint_interval,
        checkpoint_export=export,
    )


def build_audit(
    settings: Settings,
    store: SecretStore,
    *,
    worker: bool = False,
    audit_cpus: frozenset[int] | None = None,
) -> AuditStack:
    """The audit stack for ``settings`` over ``store`` (not started: call ``start()``); its
    audit processes run on ``audit_cpus`` if given (``server.placement``)."""
    audit = settings.audit
    node = audit.node or socket.gethostname()
    if worker:
        node = f"{node}-{os.getpid()}"
    specs = device_settings(settings)
    deferred = {
        spec.name: functools.partial(_encryption_key, store, spec, settings)
        for spec in specs
        if spec.type == "file" and spec.encrypt and _deferred(store)
    }
    keys = BarrierKeySource(store.barrier, ciphers=deferred)
    stack = AuditStack(broker=None, keys=keys, node=node, checkpoint_every=audit.checkpoint_every)
    monitor = settings.monitor
    stack.file_paths = {spec.name: Path(spec.path) for spec in specs if spec.type == "file"}
    # A worker of a multi-worker server feeds the shared monitor process; otherwise, with
    # audit.process, the first file device's audit process runs the detectors too.
    shared = link_from_env() if worker else None
    watcher = next(
        (spec.name for spec in specs if spec.type == "file" and audit.process and audit.enabled),
        None,
    )
    if shared is not None:
        watcher = None
    if monitor.enabled:
        configured = [_channel(c) for c in monitor.channels]
        builtin = [] if any(c.type == "log" for c in monitor.channels) else [LogChannel()]
        stack.dispatcher = AlertDispatcher(
            [*builtin, *configured],
            dedup_window=monitor.dedup_window,
            on_alert=stack.record_alert,
        )
        salter = _salter(specs, keys)
        if not worker and salter is not None:
            stack.history = AlertHistory(
                stack.dispatcher,
                Path(settings.data_dir, "monitor", "alerts.state"),
                derived_key(salter, HISTORY_KEY),
            )
        if shared is not None:  # its own alerts raised here, the other workers' noted
            stack.alerts_in = AlertReceiver(stack.dispatcher.raise_, stack.dispatcher.note)
            stack.link = MonitorLink(
                shared, material=_hmac_key(specs, keys), on_message=stack.alerts_in
            )
        elif watcher is not None:
            stack.alerts_in = AlertReceiver(stack.dispatcher.raise_)
        else:
            stack.detectors = DetectorSet.default(
                monitor.detectors,
                store.catalog.is_honeytoken,
            )
            stack.monitor = MonitorEngine(
                stack.detectors,
                stack.dispatcher.raise_,
                keeper=_keeper(stack.detectors, settings, specs, keys, worker=worker),
                is_honeytoken=store.catalog.is_honeytoken,
            )
    if not monitor.enabled and monitor.channels:
        log.warning("monitor.enabled is false: the configured alert channels are not used")
    export = _checkpoint_export(settings)
    lanes = [
        _lane(
            spec,
            settings,
            store,
            keys,
            node=node,
            worker=worker,
            alarm=stack.alarm,
            export=(
                export.with_name(f"{export.stem}-{spec.name}{export.suffix}")
                if export is not None and len(specs) > 1
                else export
            ),
            alerts=stack.alerts_in if spec.name == watcher else None,
            cpus=audit_cpus,
        )
        for spec in specs
    ]
    if not audit.enabled:
        log.warning("dev mode with audit switched off: requests are not audited")
        return stack
    if not lanes:
        log.error("no audit device configured: every request but health checks is refused")
    elif not any(lane.required for lane in lanes):
        raise ConfigError(
            "setting 'audit.device': at least one device must be required (file, database or http)"
        )
    stack.broker = AuditBroker(
        lanes,
        prefix=store.catalog.prefix,
        keys=keys,
        timeout=audit.timeout,
        on_event=(
            stack.monitor.submit
            if stack.monitor is not None
            else stack.link.submit
            if stack.link is not None
            else None
        ),
    )
    return stack


def _channel(spec: AlertChannelSettings) -> AlertChannel:
    """An alert channel from its settings."""
    if spec.type == "slack":
        return SlackChannel(spec.url, name=spec.name)
    if spec.type == "webhook":
        return WebhookChannel(spec.url, secret=spec.secret.encode(), name=spec.name)
    if spec.type == "smtp":
        return SmtpChannel(
            spec.host,
            spec.port,
            sender=spec.sender,
            recipients=spec.recipients,
            starttls=spec.starttls,
            username=spec.username or None,
            password=spec.password or None,
            name=spec.name,
        )
    return LogChannel(name=spec.name)
