"""The audit process: one file device's lane, run outside the server process.

A server that audits to a file device in a separate process (``RemoteLane``,
``audit.remote``) starts ``python -m medsecrets.audit.sidecar`` and talks to it
over its standard input and output in ``audit.channel`` frames. Here the events
are rendered (HMACs, the chain, signed checkpoints), written and fsync'd by an
ordinary ``Lane`` over a ``FileAuditDevice`` (without a writer thread: this
process's one thread writes each batch itself, see ``run``); the
server keeps only the cheap part of auditing (a tuple per event) and its
threads never wait for the GIL on this process's behalf.

Messages from the server:

- ``("config", {...}, PROTOCOL)`` first: the device and lane settings (``LaneConfig``)
  and the protocol version (another version is refused with ``("error", "protocol", text)``);
  answered by ``("ready", seq)`` (the chain's durable head) or
  ``("error", kind, text)`` when the device cannot be opened (then the process ends);
- ``("keys", hmac_key, signing_key)``: the device's HMAC key and the checkpoint
  signing key (raw Ed25519 private bytes), sent whenever the barrier is
  unsealed; ``("forget",)`` when it seals (records then carry no HMACs);
- ``("events", first, items)``: items numbered ``first``, ``first + 1``, …; an
  item is ``(wait, packed event, packed completion or None)`` (``audit.packed``): with
  a completion, the request event and its response (``Lane.append_packed``: two
  records rendered from the tuples, one answer);
- end of input: write what is queued, close the device, exit 0.

Messages to the server: ``("refused", numbers)`` for items the lane refused at
once (its queue full), and one ``("acks", answers, stats)`` per batch written
(only writes send these):
``answers`` is a list of ``(number, ok)`` for every item of the batch that asked
to ``wait``, in order (ok: durably written; not ok: the write failed), ``stats``
the lane's ``(up, hung, records, failures, dropped, pending, last_error, seq, taken)``,
where ``taken`` counts the server's records this process is done with (written or
dropped; its own checkpoints not included): whatever the server sent beyond it is lost
if the process dies.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, cast

from medsecrets.audit.channel import FrameError, FrameReader, Message, encode
from medsecrets.audit.checkpoint import CHECKPOINT_EVERY
from medsecrets.audit.lane import DeviceKeys, Lane, Written
from medsecrets.audit.packed import Item, PackedEvent
from medsecrets.audit.record import Salter
from medsecrets.audit.waiter import Waiter
from medsecrets.fdio import write_all
from medsecrets.logs import log_json

if TYPE_CHECKING:
    from medsecrets.audit.crypt import RecordCipher

__all__ = [
    "PROTOCOL",
    "LaneConfig",
    "ProtocolMismatch",
    "main",
    "run",
]

_log = logging.getLogger("medsecrets.audit")


class Watcher(Protocol):
    """What an ``Observer`` returns."""

    def __call__(self, events: list[PackedEvent]) -> None:
        """See the events of a batch, packed (see ``Observer``)."""
        ...

    def close(self) -> None:
        """The audit process ends (after its last batch)."""
        ...


Observer = Callable[
    [Mapping[str, object], Callable[[Message], None], Callable[[], Salter | None]], Watcher
]
"""``(LaneConfig.monitor, send, salter) -> watcher``: what an entry point above this layer
plugs in (the detectors): ``watcher(events)`` sees the events of each batch (packed:
``audit.packed``), written or failed, in chain order (requests and checkpoints too: the
detectors look at responses),
after its answers went out, and may ``send`` messages of its own to the server (their
first item neither ``acks`` nor ``refused``); ``salter()`` is the device's ``Salter``
(``None`` while sealed), for keys of its own (``Salter.derive``); ``watcher.close()`` is
called once the lane has stopped."""


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """What the audit process needs to build the same file lane the server would.

    ``cipher_key`` is the audit log encryption key (kept out of ``repr``); with
    ``cipher_deferred`` instead (the server started with its store sealed) the key
    comes with the first ``keys`` message after the store is unsealed (lines are
    written plain until then; a ``keys`` message whose cipher part is an error
    text fails every write: ``FileAuditDevice(cipher_source=)``).
    """

    name: str
    path: str
    node: str
    max_bytes: int
    rotate_interval: float = 0.0
    keep: int = 0
    cipher_key: bytes | None = None
    cipher_deferred: bool = False
    timeout: float = 5.0
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_interval: float = 60.0
    checkpoint_export: str | None = None
    monitor: dict[str, object] | None = None
    """Settings for the audit process's ``Observer`` (opaque here; ``None``: no observer)."""
    log_level: str = "warning"
    log_file: str | None = None
    """Where this process logs: the server's own log (JSON lines), stderr without a file."""

    def __repr__(self) -> str:
        return f"LaneConfig(name={self.name!r}, path={self.path!r}, node={self.node!r})"

    def to_message(self) -> Message:
        """The ``("config", {...}, PROTOCOL)`` message."""
        return ("config", {name: getattr(self, name) for name in self.__slots__}, PROTOCOL)

    @classmethod
    def from_message(cls, message: Message) -> LaneConfig:
        """The config of a ``("config", {...}, PROTOCOL)`` message; ``ValueError`` for
        anything else, ``ProtocolMismatch`` for another version of the protocol."""
        if len(message) != 3 or message[0] != "config" or not isinstance(message[1], dict):
            raise ValueError("the first message must be the lane's config")
        if message[2] != PROTOCOL:
            raise ProtocolMismatch(
                f"the server speaks audit protocol {message[2]!r}, this audit process "
                f"{PROTOCOL} (code upgraded under a running server? restart it)"
            )
        return cls(**message[1])


PROTOCOL: Final = 6
"""The version of the messages between a server and its audit process (``RemoteLane``
sends it with the config; the audit process refuses any other). Bump it with any change
to a message's shape."""


class ProtocolMismatch(ValueError):
    """The server and the audit process run different versions of this module."""


class _Keys:
    """The lane's ``KeySource``: the keys the server sent last (``None``: sealed), and
    a deferred at-rest cipher's state (``cipher``: see ``LaneConfig``)."""

    def __init__(self) -> None:
        self.current: DeviceKeys | None = None
        self.cipher_state: bytes | str | None = None
        """The deferred cipher's key, or why it cannot be had, as the server sent it."""

    def cipher(self) -> RecordCipher | None:
        """``FileAuditDevice``'s ``cipher_source``: the key once sent (``None`` before);
        ``ConfigError`` with the server's reason if it could not be read."""
        from medsecrets.audit.crypt import deferred_cipher

        return deferred_cipher(self.cipher_state)

    def __repr__(self) -> str:
        return f"_Keys(unsealed={self.current is not None})"

    def __call__(self, device: str) -> DeviceKeys | None:
        return self.current

    def salter(self) -> Salter | None:
        """The current keys' ``Salter`` (``None`` while sealed)."""
        current = self.current
        return current.salter if current is not None else None

    def set(self, hmac_key: bytes, signing_key: bytes) -> None:
        from medsecrets.audit.checkpoint import CheckpointSigner

        signer = CheckpointSigner.from_private_bytes(signing_key)

        def sign(node: str, device: str, covers: int, covers_hash: str) -> dict[str, object]:
            return signer.extra(node=node, device=device, covers=covers, covers_hash=covers_hash)

        self.current = DeviceKeys(salter=Salter(hmac_key), sign=sign)


def _stats(lane: Lane, own: int) -> tuple[object, ...]:
    """The ``stats`` of an ``acks`` message; ``own``: the checkpoint records the lane has
    written or dropped (not the server's)."""
    return (
        lane.up,
        lane.hung,
        lane.records,
        lane.failures,
        lane.dropped,
        lane.pending,
        lane.last_error,
        lane.head.seq,
        lane.records + lane.dropped - own,
    )


def _lane(config: LaneConfig, keys: _Keys, on_written: Written) -> Lane:
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
        cipher_source=keys.cipher if config.cipher_deferred else None,
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
        on_written=on_written,
        writer_thread=False,
    )


class _Ack(Waiter):
    """A waiter that knows its event's number (the server's), to answer it by."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        super().__init__(1)
        self.number = number


FLUSH_AT: Final = 256
"""Records rendered after which a batch is written even while more is arriving (a server
that never pauses must still get answers)."""


def run(inp: int, out: int, observer: Observer | None = None, *, own_logging: bool = False) -> int:
    """Serve one server over ``inp``/``out`` (see module docstring); the exit status.

    ``own_logging``: this is the audit process itself (``main``), so it logs as the
    config says (the server's level and file); otherwise logging is left alone.

    One thread does everything, in a loop: read what arrived and render it into
    the lane (HMACs, the chain); when no whole message waits in the pipe, write
    and fsync everything rendered as one batch (``Lane.flush``), answer it and run
    the observer over it; read again. Also write once ``FLUSH_AT`` records are
    rendered, however much more is waiting, and never wait for the rest of a
    frame the pipe took only in part with records unwritten: the server sends
    that rest only when it appends again or reads answers, so both would wait
    until the audit timeout.

    What the server sends during a write waits in the pipe and becomes the next
    batch (group commit), and no second thread means no GIL hand-off between
    rendering and writing (measured: +7% reads and a lower p99 together with
    ``RemoteLane`` sending each record at once, ``docs/benchmarks.md``, session
    8). A write that hangs holds everything behind it in the pipe, and the
    server fails the waiters once their answers are late
    (``RemoteLane.check_hung``).
    """
    reader = FrameReader(inp)

    def send(message: Message) -> None:  # (one thread: frames never interleave)
        write_all(out, encode(message))

    try:
        first = reader.read()
        config = LaneConfig.from_message(first[0])
    except ProtocolMismatch as exc:
        send(("error", "protocol", str(exc)))
        return 2
    except (EOFError, FrameError, ValueError, TypeError) as exc:
        send(("error", "config", f"bad config message ({type(exc).__name__})"))
        return 2
    if own_logging:
        try:
            log_json(config.log_level, file=config.log_file)
        except OSError as exc:  # the server could open it: logged to stderr then
            log_json(config.log_level)
            _log.warning("audit process: cannot open the log file (%s)", type(exc).__name__)
    keys = _Keys()
    observe = (
        observer(config.monitor, send, keys.salter)
        if observer and config.monitor is not None
        else None
    )

    own = 0  # checkpoint records written or dropped: the lane's, not the server's

    def written(events: list[PackedEvent], waiters: list[Waiter], ok: bool) -> None:
        nonlocal own
        own += sum(1 for event in events if event[0] == "checkpoint")
        answers = [(cast(_Ack, waiter).number, ok) for waiter in waiters]
        send(("acks", answers, _stats(lane, own)))
        if observe is not None:  # failed batches too: the accesses happened all the same
            try:
                observe(events)
            except Exception as exc:  # the detectors never stop the audit trail
                _log.error("audit process: observer failed (%s)", type(exc).__name__)

    lane = _lane(config, keys, written)
    try:
        lane.start()
    except Exception as exc:
        send(("error", type(exc).__name__, str(exc)))
        return 1
    send(("ready", lane.head.seq))
    messages = first[1:]
    os.set_blocking(inp, False)
    try:
        while True:
            refused: list[int] = []
            for message in messages:
                _handle(message, lane, keys, refused)
            if refused:  # the lane's queue is full: answered no at once
                send(("refused", refused))
            messages = reader.read_ready()
            if not messages or lane.pending >= FLUSH_AT:  # no whole message waits: write
                lane.flush()
            while not messages:  # (never wait for the rest of a frame with records unwritten)
                select.select([inp], [], [])
                messages = reader.read_ready()
    except EOFError:
        pass
    except (FrameError, OSError) as exc:  # a torn stream or a closed pipe: the server restarts us
        _log.error("audit process: channel failed (%s)", type(exc).__name__)
        return 3
    finally:
        lane.stop(config.timeout)
        if observe is not None:
            try:
                observe.close()
            except Exception as exc:  # ending never fails on the detectors' account
                _log.error("audit process: observer failed to close (%s)", type(exc).__name__)
    return 0


def _handle(message: Message, lane: Lane, keys: _Keys, refused: list[int]) -> None:
    kind = message[0]
    if kind == "events":
        _, first, items = message
        number = cast(int, first)
        for wait, packed, done in cast("list[Item]", items):
            waiter = _Ack(number) if wait else None
            lane.append_packed(packed, done, waiter, notify=False)
            if waiter is not None and waiter.result is False:
                refused.append(number)
            number += 1
    elif kind == "keys":
        keys.set(cast(bytes, message[1]), cast(bytes, message[2]))
        if len(message) > 3 and message[3] is not None:  # a deferred cipher's key, or why not
            keys.cipher_state = cast("bytes | str", message[3])
    elif kind == "forget":
        keys.current = None
    else:
        _log.error("audit process: unknown message %r", kind)


def main(observer: Observer | None = None) -> None:
    """``python -m medsecrets.audit.sidecar``: serve the parent over stdin/stdout (an entry
    point of a higher layer passes its ``observer``)."""
    log_json("warning")  # until the config names the server's log
    # The server ends this process by closing the pipe, after its last events: a Ctrl-C
    # or a TERM sent to the whole process group must not cut the queue short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inp, out = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt frames
    sys.exit(run(inp, out, observer, own_logging=True))


if __name__ == "__main__":
    main()
