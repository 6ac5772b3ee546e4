"""The audit process: one file device's lane, run outside the server process.

A server that audits to a file device in a separate process (``RemoteLane``,
``audit.remote``) starts ``python -m medsecrets.audit.sidecar`` and talks to it
over its standard input and output in ``audit.channel`` frames. Here the events
are rendered (HMACs, the chain, signed checkpoints), written and fsync'd by an
ordinary ``Lane`` over a ``FileAuditDevice``, exactly as in process; the
server keeps only the cheap part of auditing (a tuple per event) and its
threads never wait for the GIL on this process's behalf.

Messages from the server:

- ``("config", {...})`` first: the device and lane settings (``LaneConfig``);
  answered by ``("ready", seq)`` (the chain's durable head) or
  ``("error", kind, text)`` when the device cannot be opened (then the process ends);
- ``("keys", hmac_key, signing_key)``: the device's HMAC key and the checkpoint
  signing key (raw Ed25519 private bytes), sent whenever the barrier is
  unsealed; ``("forget",)`` when it seals (records then carry no HMACs);
- ``("events", first, items)``: events numbered ``first``, ``first + 1``, …; an
  item is ``(wait, packed event)`` (``pack_event``);
- end of input: write what is queued, close the device, exit 0.

Messages to the server: one ``("acks", answers, stats)`` per batch written:
``answers`` is a list of ``(number, ok)`` for every event of the batch that asked
to ``wait``, in order (ok: durably written; not ok: the write failed), ``stats``
the lane's ``(up, hung, records, failures, dropped, pending, last_error, seq)``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from medsecrets.audit.channel import FrameError, FrameReader, Message, encode
from medsecrets.audit.lane import DeviceKeys, Lane
from medsecrets.audit.record import AuditEvent, Kind, Salter
from medsecrets.audit.waiter import Waiter

__all__ = ["LaneConfig", "PackedEvent", "main", "pack_event", "run", "unpack_event"]

_log = logging.getLogger("medsecrets.audit")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

PackedEvent = tuple[object, ...]
"""An ``AuditEvent`` as builtin values (``pack_event``)."""

Observer = Callable[
    [Mapping[str, object], Callable[[Message], None]], Callable[[list[AuditEvent]], None]
]
"""``(LaneConfig.monitor, send) -> observe``: what an entry point above this layer plugs in
(the detectors): ``observe(events)`` sees each written batch, after its answers went out,
and may ``send`` messages of its own to the server (their first item not ``acks``)."""


def pack_event(event: AuditEvent) -> PackedEvent:
    """``event`` as a tuple of builtin values (its time to the microsecond)."""
    time = event.time
    seconds = int(time.timestamp())
    return (
        event.kind,
        seconds,
        time.microsecond,
        event.request_id,
        event.principal,
        event.token,
        event.auth,
        event.remote,
        event.user_agent,
        event.operation,
        event.path,
        event.environment,
        event.category,
        event.version,
        event.status,
        event.error,
        event.emergency,
        event.data,
        dict(event.extra) if event.extra is not None else None,
    )


def unpack_event(packed: PackedEvent) -> AuditEvent:
    """The ``AuditEvent`` of ``pack_event(event)`` (equal to ``event``)."""
    (
        kind,
        seconds,
        micro,
        request_id,
        principal,
        token,
        auth,
        remote,
        user_agent,
        operation,
        path,
        environment,
        category,
        version,
        status,
        error,
        emergency,
        data,
        extra,
    ) = packed
    return AuditEvent(
        kind=cast(Kind, kind),
        time=_EPOCH + dt.timedelta(seconds=cast(int, seconds), microseconds=cast(int, micro)),
        request_id=cast(str, request_id),
        principal=cast("str | None", principal),
        token=cast("str | None", token),
        auth=cast("str | None", auth),
        remote=cast(str, remote),
        user_agent=cast(str, user_agent),
        operation=cast(str, operation),
        path=cast(str, path),
        environment=cast("str | None", environment),
        category=cast("str | None", category),
        version=cast("int | None", version),
        status=cast("int | None", status),
        error=cast("str | None", error),
        emergency=cast(bool, emergency),
        data=data,
        extra=cast("dict[str, object] | None", extra),
    )


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """What the audit process needs to build the same file lane the server would.

    ``cipher_key`` is the audit log encryption key (kept out of ``repr``).
    """

    name: str
    path: str
    node: str
    max_bytes: int
    rotate_interval: float = 0.0
    keep: int = 0
    cipher_key: bytes | None = None
    timeout: float = 5.0
    checkpoint_every: int = 1000
    checkpoint_interval: float = 60.0
    checkpoint_export: str | None = None
    monitor: dict[str, object] | None = None
    """Settings for the audit process's ``Observer`` (opaque here; ``None``: no observer)."""

    def __repr__(self) -> str:
        return f"LaneConfig(name={self.name!r}, path={self.path!r}, node={self.node!r})"

    def to_message(self) -> Message:
        """The ``("config", {...})`` message."""
        return ("config", {name: getattr(self, name) for name in self.__slots__})

    @classmethod
    def from_message(cls, message: Message) -> LaneConfig:
        """The config of a ``("config", {...})`` message (``ValueError`` otherwise)."""
        if len(message) != 2 or message[0] != "config" or not isinstance(message[1], dict):
            raise ValueError("the first message must be the lane's config")
        return cls(**message[1])


class _Keys:
    """The lane's ``KeySource``: the keys the server sent last (``None``: sealed)."""

    def __init__(self) -> None:
        self.current: DeviceKeys | None = None

    def __repr__(self) -> str:
        return f"_Keys(unsealed={self.current is not None})"

    def __call__(self, device: str) -> DeviceKeys | None:
        return self.current

    def set(self, hmac_key: bytes, signing_key: bytes) -> None:
        from medsecrets.audit.checkpoint import CheckpointSigner

        signer = CheckpointSigner.from_private_bytes(signing_key)

        def sign(node: str, device: str, covers: int, covers_hash: str) -> dict[str, object]:
            return signer.extra(node=node, device=device, covers=covers, covers_hash=covers_hash)

        self.current = DeviceKeys(salter=Salter(hmac_key), sign=sign)


def _stats(lane: Lane) -> tuple[object, ...]:
    return (
        lane.up,
        lane.hung,
        lane.records,
        lane.failures,
        lane.dropped,
        lane.pending,
        lane.last_error,
        lane.head.seq,
    )


def _lane(config: LaneConfig, keys: _Keys) -> Lane:
    from medsecrets.audit.crypt import RecordCipher
    from medsecrets.audit.file import FileAuditDevice

    cipher = RecordCipher(config.cipher_key) if config.cipher_key is not None else None
    device = FileAuditDevice(
        config.name,
        Path(config.path),
        max_bytes=config.max_bytes,
        rotate_interval=config.rotate_interval,
        keep=config.keep,
        cipher=cipher,
    )
    export = Path(config.checkpoint_export) if config.checkpoint_export else None
    return Lane(
        device,
        node=config.node,
        keys=keys,
        timeout=config.timeout,
        checkpoint_every=config.checkpoint_every,
        checkpoint_interval=config.checkpoint_interval,
        checkpoint_export=export,
    )


def run(inp: int, out: int, observer: Observer | None = None) -> int:
    """Serve one server over ``inp``/``out`` (see module docstring); the exit status.

    One thread: read what arrived, render it, write and fsync it as one batch,
    answer, read again. A write that hangs holds everything behind it, and the
    server fails the waiters once their answers are late (``RemoteLane.check_hung``).
    """
    reader = FrameReader(inp)

    def send(message: Message) -> None:
        view = memoryview(encode(message))
        while view:
            view = view[os.write(out, view) :]

    try:
        first = reader.read()
        config = LaneConfig.from_message(first[0])
    except (EOFError, FrameError, ValueError, TypeError) as exc:
        send(("error", "config", f"bad config message ({type(exc).__name__})"))
        return 2
    keys = _Keys()
    lane = _lane(config, keys)
    try:
        lane.start(thread=False)
    except Exception as exc:
        send(("error", type(exc).__name__, str(exc)))
        return 1
    observe = observer(config.monitor, send) if observer and config.monitor is not None else None
    send(("ready", lane.head.seq))
    messages = first[1:]
    try:
        while True:
            waiting: list[tuple[int, Waiter]] = []
            events: list[AuditEvent] = []
            for message in messages:
                _handle(message, lane, keys, waiting, events)
            lane.write_queued()
            answers = [(number, bool(waiter.result)) for number, waiter in waiting]
            send(("acks", answers, _stats(lane)))
            if observe is not None and events:
                try:
                    observe(events)
                except Exception as exc:  # the detectors never stop the audit trail
                    _log.error("audit process: observer failed (%s)", type(exc).__name__)
            messages = reader.read()
    except EOFError:
        pass
    except (FrameError, OSError) as exc:  # a torn stream or a closed pipe: the server restarts us
        _log.error("audit process: channel failed (%s)", type(exc).__name__)
        return 3
    finally:
        lane.stop(config.timeout)
    return 0


def _handle(
    message: Message,
    lane: Lane,
    keys: _Keys,
    waiting: list[tuple[int, Waiter]],
    events: list[AuditEvent],
) -> None:
    kind = message[0]
    if kind == "events":
        _, first, items = message
        number = cast(int, first)
        for wait, packed in cast("list[tuple[bool, PackedEvent]]", items):
            waiter = Waiter(1) if wait else None
            event = unpack_event(packed)
            events.append(event)
            lane.append(event, waiter, notify=False)
            if waiter is not None:
                waiting.append((number, waiter))
            number += 1
    elif kind == "keys":
        keys.set(cast(bytes, message[1]), cast(bytes, message[2]))
    elif kind == "forget":
        keys.current = None
    else:
        _log.error("audit process: unknown message %r", kind)


def main(observer: Observer | None = None) -> None:
    """``python -m medsecrets.audit.sidecar``: serve the parent over stdin/stdout (an entry
    point of a higher layer passes its ``observer``)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    # The server ends this process by closing the pipe, after its last events: a Ctrl-C
    # or a TERM sent to the whole process group must not cut the queue short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inp, out = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt frames
    sys.exit(run(inp, out, observer))


if __name__ == "__main__":
    main()
