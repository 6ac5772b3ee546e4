"""``RemoteLane``: a file device's lane whose work runs in an audit process.

It stands in for a ``Lane`` in the ``AuditBroker`` (same methods and health
attributes), but renders nothing: ``append`` packs the event into a tuple
(``sidecar.pack_event``) and sends it at once as a frame (with anything the
pipe did not take before) to the audit process (``audit.sidecar``), which
batches what arrives while it writes, and renders, chains,
writes and fsyncs it with an ordinary ``Lane`` and answers, in order, for the
events that wait. Answers are read on the event loop the broker attaches
(``attach``: no thread of the server needs the GIL to answer its requests),
else by a reader thread. So the server process spends
about a tuple per record on auditing, and no thread of it waits for the GIL
around a write or an fsync.

Fail closed, as a ``Lane``:

- an event whose answer has not come within ``timeout`` + 1 s (a write hangs
  in the audit process) fails, with everything waiting behind it, and the lane
  is *hung* until an answer arrives again; waiters appended while it is hung
  are refused at once. Still hung after ``STUCK_AFTER`` such periods, the audit
  process is killed and restarted;
- if the audit process dies (or is killed: stuck, or its backlog full), every
  waiter fails and the lane is *down*; a new process is started after a
  back-off (1 s, doubling to 30 s with each failed start and each process lost
  before it served ``MAX_BACKOFF`` s: one that crashes at once is not restarted
  every second) and continues the chain from the file's durable head. Events
  queued or appended while down are dropped and counted
  (``dropped``), their waiters refused; so are the records the dead process was sent
  but never reported done with (written or dropped), however far they got (a batch it
  wrote but died before acknowledging counts as lost: the count errs on the safe side);
- sends never block: what the pipe does not take waits in a backlog of at most
  ``max_backlog`` bytes; a fuller backlog means the audit process does not keep
  up, and it is treated as dead (no frame is ever cut: the new process starts
  a new stream).

With an ``entry`` module that plugs an observer into the audit process (the
server's detectors, ``server.auditprocess``), messages other than answers go to
``on_message`` (alerts).

With ``cpus`` every audit process this lane starts is restricted to those CPUs
(``server.placement``: away from the serving thread), and with ``idle`` it runs under
``SCHED_IDLE`` (``audit.process_priority``, ``audit.priority``): any other thread that
wakes on its CPU, the transport's I/O thread above all, runs at once instead of waiting
for its renders and fsyncs to yield; failing to do either is logged only. An idle-priority
process found starved (``priority.Starvation``: an answer late while it was runnable all
along and barely ran; something else keeps its CPU busy) is put back to the normal policy,
or, where that needs a privilege the server lacks, lost and restarted at normal priority
(its waiters fail, as for any loss); the lane's processes run at normal priority from
then on.

Keys cross the pipe, never the disk: before the first events sent after an
unseal the lane sends the device's HMAC key and the checkpoint signing key
(``key_material``), and ``("forget",)`` within a watchdog tick of a seal. A deferred
at-rest key (``LaneConfig.cipher_deferred``) comes with them; until the audit process
has it, records the store is unsealed for but whose keys cannot be read (``key_material``
raised: storage trouble) are not sent to be written in clear: they fail, as an
in-process device's write does (a failure each such batch, and the device is not ``up``
until the audit process has written a record sent after the last refusal).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, NamedTuple

from medsecrets.audit.channel import FrameError, FrameReader, Message, encode
from medsecrets.audit.crypt import RecordCipher, deferred_cipher
from medsecrets.audit.device import ChainHead
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.packed import (
    Item,
    PackedCompletion,
    PackedEvent,
    pack_completion,
    pack_event,
    refused,
)
from medsecrets.audit.priority import STARVED_AFTER, Starvation, is_idle, make_idle, make_normal
from medsecrets.audit.record import AuditEvent, Completion
from medsecrets.audit.sidecar import LaneConfig
from medsecrets.audit.waiter import Waiter, answer_all
from medsecrets.errors import ConfigError

__all__ = ["KeyMaterial", "RemoteLane", "child_env"]

_log = logging.getLogger("medsecrets.audit")

KeyMaterial = Callable[[str], "tuple[bytes, bytes, bytes | str | None] | None"]
"""``BarrierKeySource.material``: device name → ``(HMAC key, checkpoint signing key,
deferred cipher's key or why not)``, ``None`` while sealed; raises on storage trouble."""


STUCK_AFTER = 3
"""Hung periods (``timeout`` + 1 s each) after which the audit process is restarted."""

MAX_BACKOFF: Final = 30.0
"""The longest wait (s) before a restart. The wait starts at 1 s and doubles with each
failed start and with each process lost before it served this long; one lost after
serving longer is restarted after 1 s again."""

_UNKNOWN: object = object()
"""``_sent`` when the audit process's keys are not known (a new process)."""


class _Reader(NamedTuple):
    """A reader thread and the pipe that tells it to stop."""

    thread: threading.Thread
    stop_read: int
    stop_write: int

    def retire(self) -> None:
        """Stop the thread (if it still runs), wait for it, close the pipe."""
        with contextlib.suppress(OSError):
            os.write(self.stop_write, b"x")
        self.thread.join()
        for fd in (self.stop_read, self.stop_write):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Stats(NamedTuple):
    """The audit process's lane, as of its last message."""

    up: bool = False
    hung: bool = False
    records: int = 0
    failures: int = 0
    dropped: int = 0
    pending: int = 0
    last_error: str | None = None
    seq: int = 0
    taken: int = 0
    """The records this process is done with (written or dropped) of those it was sent."""


class _Broken(Exception):
    """A message from the audit process that the protocol does not allow."""


def _stats_of(value: object) -> _Stats:
    """The ``stats`` of an ``acks`` message (``_Broken`` if malformed): two bools, four
    counts, an error text or ``None``, two counts (``_Stats``; checked field by field,
    once a batch on the event loop)."""
    if not (
        type(value) is tuple
        and len(value) == len(_Stats._fields)
        and isinstance(value[0], bool)
        and isinstance(value[1], bool)
        and isinstance(value[2], int)
        and isinstance(value[3], int)
        and isinstance(value[4], int)
        and isinstance(value[5], int)
        and (value[6] is None or isinstance(value[6], str))
        and isinstance(value[7], int)
        and isinstance(value[8], int)
    ):
        raise _Broken("malformed stats in an acks message")
    return _Stats._make(value)


_PIPE_SIZE = 1 << 20

ANSWER_MAX_FRAME: Final = 16 << 20
"""The largest frame read from an audit process. What it sends is small: ``acks`` (a pair
per item of one batch of at most ``sidecar.FLUSH_AT`` records, and the stats), ``refused``
(the numbers of one read's items: a read takes at most 1 MiB of events), ``alerts`` (the
detectors' alerts of one batch) and the handshake. A larger length is a protocol breach
found before any of it is buffered, not a wait for up to ``channel.MAX_FRAME`` bytes."""
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class RemoteLane:
    """See module docstring. Thread-safe."""

    sends_at_once = True  # every append is written to the pipe before it returns

    def __init__(
        self,
        config: LaneConfig,
        *,
        key_material: KeyMaterial,
        required: bool = True,
        max_backlog: int = 64 << 20,
        python: str = sys.executable,
        entry: str = "medsecrets.audit.sidecar",
        on_message: Callable[[Message], None] | None = None,
        start_timeout: float = 30.0,
        cpus: frozenset[int] | None = None,
        idle: bool = False,
    ) -> None:
        self.config = config
        self.name = config.name
        self.required = required
        self.device = FileAuditDevice(
            config.name,
            Path(config.path),
            max_bytes=config.max_bytes,
            rotate_interval=config.rotate_interval,
            keep=config.keep,
            cipher=_cipher(config.cipher_key),
            cipher_source=self._deferred_cipher if config.cipher_deferred else None,
        )
        """The device, for reading its files back (the audit process writes them)."""
        self._material = key_material
        self._timeout = config.timeout
        self._max_backlog = max_backlog
        self._python = python
        self._entry = entry
        self._on_message = on_message
        self._start_timeout = start_timeout
        self._cpus = cpus
        self._idle = idle
        self._starvation: Starvation | None = None  # watches the process while it is idle
        self._lock = threading.Lock()
        self._items: list[Item] = []
        self._queued = 0  # the records ``_items`` hold (an exchange holds two)
        self._number = 0  # the last event number given
        self._first = 1  # the number of the first queued event
        self._waiting: dict[int, tuple[Waiter, float]] = {}  # in number order
        self._backlog = bytearray()
        self._framed = 0  # records framed for the current process (sent, or in the backlog)
        self._floor = 0  # numbers up to this one were never framed for the current process
        self._last_framed = 0  # the last number framed for the current process
        self._acked = 0  # the last number the current process answered
        self._sent: object = _UNKNOWN  # the key material the process has (identity)
        self._cipher_sent = False  # whether the process has a deferred cipher's key
        self._process: subprocess.Popen[bytes] | None = None
        self._frames: FrameReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: _Reader | None = None
        self._restarter: threading.Thread | None = None
        self._stopping = False
        self._keys_failing = False  # logged once as it starts, once as it ends
        self._down = True
        self._adopted = 0.0  # when the current process was adopted (monotonic)
        self._quick = 0  # audit processes lost in a row before they served MAX_BACKOFF s
        self._hung_since: float | None = None
        self._stats = _Stats()
        self._dropped = 0  # records dropped here, and by audit processes gone since
        self._outages = 0  # hangs and losses of the audit process
        self._refusals = 0  # batches refused here: their deferred key could not be read
        self._refusing: int | None = None
        """While records are refused for want of the deferred key: ``_framed`` at the last
        refusal (the device is down until the audit process wrote a record framed after it)."""
        self._before = _Stats()  # the counts of the audit processes gone before this one
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"RemoteLane({self.name!r}, down={self._down})"

    # -- health (the Lane attributes the broker reports) --------------------------------
    @property
    def up(self) -> bool:
        """Whether the audit process runs, its last write succeeded, nothing is hung and
        records are not refused for want of the deferred key (until a write succeeds)."""
        return (
            not self._down
            and self._hung_since is None
            and self._refusing is None
            and self._stats.up
        )

    @property
    def hung(self) -> bool:
        """Whether an answer is overdue."""
        return self._hung_since is not None or self._stats.hung

    @property
    def ok(self) -> bool:
        return self.up

    # The counts are read under the lock: ``_lose`` moves a dead process's counts into
    # the lane's in several steps, and a reader between them counted them twice, or saw
    # the lane down with its losses not counted yet.
    @property
    def records(self) -> int:
        """Records written, by every audit process this lane ran."""
        with self._lock:
            return self._before.records + self._stats.records

    @property
    def dropped(self) -> int:
        """Records dropped here (appended while down, over the frame limit, lost with a dead
        audit process's queue) and by the audit processes (their queue full)."""
        with self._lock:
            return self._dropped + self._stats.dropped

    @property
    def failures(self) -> int:
        """Failed writes, by every audit process this lane ran, plus the times an audit
        process hung (answers over the timeout) or was lost, and the batches refused here
        because the deferred key could not be read (an in-process device fails its write)."""
        with self._lock:
            return self._before.failures + self._stats.failures + self._outages + self._refusals

    @property
    def pending(self) -> int:
        """Records queued here or in the audit process and not yet written."""
        with self._lock:
            return self._queued + self._stats.pending

    @property
    def head(self) -> ChainHead:
        """The last durable record's number (its hash stays in the audit process)."""
        return ChainHead(self._stats.seq, "")

    @property
    def checkpoint_export(self) -> Path | None:
        """Where the audit process also writes this lane's checkpoints, if anywhere."""
        export = self.config.checkpoint_export
        return Path(export) if export else None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start the audit process and wait until its device is open (``ConfigError`` if
        it cannot be opened)."""
        if self.config.checkpoint_export:
            Path(self.config.checkpoint_export).parent.mkdir(
                mode=0o700, parents=True, exist_ok=True
            )
        process, frames, seq = self._spawn()
        self._adopt(process, frames, seq)

    def _adopt(self, process: subprocess.Popen[bytes], frames: FrameReader, seq: int) -> None:
        """Make a started audit process the current one and read its answers."""
        with self._lock:
            if self._stopping:
                _end(process)
                return
            self._process, self._frames = process, frames
            self._stats = _Stats(up=True, seq=seq)
            self._adopted = time.monotonic()
            self._framed = 0
            self._floor = self._last_framed = self._acked = self._number
            if self._refusing is not None:  # still refusing: until this process writes
                self._refusing = 0
            self._sent = _UNKNOWN
            self._cipher_sent = False
            self._hung_since = None
            self._down = False
            self._starvation = Starvation(process.pid) if is_idle(process.pid) else None
            loop = self._loop
            if loop is None:
                self._reader = self._reader_thread(process, frames)
        if loop is not None:
            loop.call_soon_threadsafe(self._listen_on_loop, process, frames)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the answers on ``loop`` from now on, not in a thread: no thread then needs
        the GIL to answer the loop's waiters. Call it on ``loop``'s thread."""
        with self._lock:
            if self._loop is loop:
                return
            if self._loop is not None:
                raise RuntimeError("a remote audit lane serves one event loop")
            self._loop = loop
            reader, self._reader = self._reader, None
            process, frames, down = self._process, self._frames, self._down
        if reader is not None:
            reader.retire()
        if process is not None and frames is not None and not down:
            self._listen_on_loop(process, frames)

    def _reader_thread(self, process: subprocess.Popen[bytes], frames: FrameReader) -> _Reader:
        stop_read, stop_write = os.pipe()
        thread = threading.Thread(
            target=self._read_thread,
            args=(process, frames, stop_read),
            name=f"audit-{self.name}",
            daemon=True,
        )
        thread.start()
        return _Reader(thread, stop_read, stop_write)

    def _listen_on_loop(self, process: subprocess.Popen[bytes], frames: FrameReader) -> None:
        """Read ``process``'s answers on the attached loop (on its thread), if still current."""
        with self._lock:
            current = process is self._process and not self._down
        if current and self._loop is not None and process.stdout is not None:
            self._loop.add_reader(process.stdout.fileno(), self._on_readable, process, frames)

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, let the audit process write it and exit; fail what is
        left unanswered."""
        self._flush(stopping=True)
        with self._lock:
            process, restarter = self._process, self._restarter
        if restarter is not None:
            restarter.join(timeout)
        if process is not None and process.stdin is not None:
            deadline = time.monotonic() + timeout
            while self._backlog and time.monotonic() < deadline and process.poll() is None:
                with self._lock:
                    self._drain()
                time.sleep(0.01)
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _log.error("audit device %s: the audit process did not stop; killed", self.name)
                _end(process)
                process.wait()
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.retire()
        with self._lock:
            self._down = True
            left = [waiter for waiter, _ in self._waiting.values()]
            self._waiting.clear()
        answer_all(left, ok=False)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], FrameReader, int]:
        process = subprocess.Popen(
            [self._python, "-I", "-m", self._entry],  # isolated: no PYTHON* variables
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            env=child_env(os.environ),
        )
        assert process.stdin is not None and process.stdout is not None
        if self._cpus:  # before the config: the threads it starts then inherit the set
            self._place(process.pid, self._cpus)
        stdin = process.stdin.fileno()
        with contextlib.suppress(OSError):  # a smaller pipe only means an earlier backlog
            fcntl.fcntl(stdin, _F_SETPIPE_SZ, _PIPE_SIZE)
        reader = FrameReader(process.stdout.fileno(), max_frame=ANSWER_MAX_FRAME)
        try:
            process.stdin.write(encode(self.config.to_message()))
            process.stdin.flush()
            first = _first_message(reader, process, self._start_timeout)
        except BaseException:
            _end(process)
            raise
        if first[0] != "ready":
            _end(process)
            raise ConfigError(f"audit device {self.name!r}: {first[-1]}")
        if self._idle:  # once started (a start on a busy CPU must not starve); its main
            self._lower(process.pid)  # thread, the one that writes, is the one that matters
        os.set_blocking(stdin, False)
        os.set_blocking(process.stdout.fileno(), False)
        return process, reader, int(first[1])  # type: ignore[call-overload]

    def _place(self, pid: int, cpus: frozenset[int]) -> None:
        """Restrict the audit process ``pid`` to ``cpus`` (a failure is logged, not fatal)."""
        try:
            os.sched_setaffinity(pid, cpus)
        except (OSError, AttributeError) as exc:
            _log.warning(
                "audit device %s: cannot place the audit process on CPUs %s (%s)",
                self.name,
                sorted(cpus),
                type(exc).__name__,
            )

    def _lower(self, pid: int) -> None:
        """Run the audit process ``pid`` under ``SCHED_IDLE`` where its starvation can be
        seen (``priority.make_idle``; a failure is logged, not fatal)."""
        try:
            make_idle(pid)
        except (OSError, AttributeError) as exc:
            _log.warning(
                "audit device %s: cannot lower the audit process's priority (%s)",
                self.name,
                type(exc).__name__,
            )

    # -- the hot path -----------------------------------------------------------------
    def append(
        self, event: AuditEvent, waiter: Waiter | None = None, *, notify: bool = True
    ) -> None:
        """Queue ``event`` (``waiter`` answered once it is durable, or not) and send it at
        once, whatever ``notify`` says (see ``_enqueue``)."""
        self._enqueue((waiter is not None, pack_event(event), None), waiter)

    def append_exchange(
        self,
        request: AuditEvent,
        completion: Completion,
        waiter: Waiter | None = None,
        *,
        notify: bool = True,
    ) -> None:
        """``append`` a request and its response as one item (the audit process writes
        both records in one batch and answers once)."""
        item = (waiter is not None, pack_event(request), pack_completion(completion))
        self._enqueue(item, waiter)

    def append_packed(
        self,
        event: PackedEvent,
        completion: PackedCompletion | None = None,
        waiter: Waiter | None = None,
        *,
        notify: bool = True,
    ) -> None:
        """``append`` or ``append_exchange`` of an event already packed
        (``AuditLane.append_packed``): the broker's way, with no objects to pack."""
        self._enqueue((waiter is not None, event, completion), waiter)

    def _enqueue(self, item: Item, waiter: Waiter | None) -> None:
        """Queue ``item`` and send what is queued, under one hold of the lock.

        Sent at once rather than at the broker's once-per-iteration ``wake``: the
        audit process batches what arrives while it writes, and a record that waited
        for the end of the loop iteration (every other request the loop ran in it)
        waited ~0.4 ms for nothing (measured, ``docs/benchmarks.md``, session 8).
        """
        material, trouble = self._key_state()
        failed: list[Waiter] = []
        overflow = False
        with self._lock:
            process = self._process
            if self._down or self._stopping:
                self._dropped += 1 if item[2] is None else 2
                if waiter is not None:
                    failed.append(waiter)
            else:
                refuse = waiter is not None and self._hung_since is not None
                if refuse and item[2] is not None:  # the read is refused: say so
                    item = (item[0], item[1], refused(item[2]))
                if not self._items:
                    self._first = self._number + 1
                self._number += 1
                self._items.append(item)
                self._queued += 1 if item[2] is None else 2
                if waiter is not None:
                    if refuse:
                        failed.append(waiter)
                    else:
                        self._waiting[self._number] = (waiter, time.monotonic())
                if process is not None:
                    overflow = self._send(process, material, trouble, failed)
        if failed:
            answer_all(failed, ok=False)
        if overflow and process is not None:
            self._lose(process, "backlog-full")

    def wake(self) -> None:
        """Send what is queued."""
        self._flush()

    def _deferred_cipher(self) -> RecordCipher | None:
        """The readback device's deferred cipher: the one sent with the key material."""
        material = self._keys()
        return deferred_cipher(material[2]) if material is not None else None

    def _keys(self) -> tuple[bytes, bytes, bytes | str | None] | None:
        """The key material now; ``None`` (records without HMACs) if it cannot be had."""
        return self._key_state()[0]

    def _key_state(self) -> tuple[tuple[bytes, bytes, bytes | str | None] | None, bool]:
        """The key material now (``None`` if it cannot be had), and whether it could not
        be read although the store is unsealed (storage trouble: ``key_material`` raised).
        Trouble is logged once as it starts and once as it ends, not at every flush."""
        try:
            material = self._material(self.name)
        except Exception as exc:  # storage trouble: records without HMACs, as in process
            if not self._keys_failing:
                self._keys_failing = True
                _log.warning(
                    "audit device %s: keys unavailable (%s)", self.name, type(exc).__name__
                )
            return None, True
        if self._keys_failing:
            self._keys_failing = False
            _log.info("audit device %s: keys available again", self.name)
        return material, False

    def _flush(self, *, stopping: bool = False) -> None:
        """Send what is queued (``stopping``: and refuse whatever is appended from now)."""
        material, trouble = self._key_state()
        failed: list[Waiter] = []
        with self._lock:
            if stopping:
                self._stopping = True
            process = self._process
            if not self._items or process is None or self._down:
                return
            overflow = self._send(process, material, trouble, failed)
        if failed:
            answer_all(failed, ok=False)
        if overflow:
            self._lose(process, "backlog-full")

    def _send(
        self,
        process: subprocess.Popen[bytes],
        material: tuple[bytes, bytes, bytes | str | None] | None,
        trouble: bool,
        failed: list[Waiter],
    ) -> bool:
        """Frame the queued items (after new key material, if it changed) and write as
        much as the pipe takes (lock held, ``process`` current and up). Waiters of items
        refused here go into ``failed``. Whether the backlog is now over ``max_backlog``
        (the caller then treats the process as dead)."""
        items, self._items = self._items, []
        records, self._queued = self._queued, 0
        first = self._first
        if trouble and self.config.cipher_deferred and not self._cipher_sent:
            # Unsealed, but the deferred key cannot be had: the audit process would
            # write these plain. They fail, as an in-process device's write does.
            _log.error("audit device %s: its encryption key cannot be read", self.name)
            self.last_error = "keys-unavailable"
            self._refusals += 1
            self._refusing = self._framed
            self._refuse_unframed(items, first, records, failed)
            return self._drain()
        frame = b""
        if material is not self._sent:
            frame = encode(("keys", *material) if material else ("forget",))
            self._sent = material
            # the audit process keeps a deferred cipher once sent (seals included)
            self._cipher_sent |= _carries_cipher(material)
        try:
            frame += encode(("events", first, items))
        except FrameError as exc:  # over the frame limit (huge bodies): refused, not cut
            _log.error("audit device %s: %s", self.name, exc)
            self._refuse_unframed(items, first, records, failed)
        else:
            self._framed += records
            self._last_framed = first + len(items) - 1
        stdin = process.stdin
        if self._backlog or stdin is None:  # behind what the pipe did not take yet
            self._backlog += frame
            return self._drain()
        if not frame:
            return False
        try:
            written = os.write(stdin.fileno(), frame)
        except BlockingIOError:
            written = 0
        except OSError:  # the process is gone: its reader finds out
            return False
        if written < len(frame):
            self._backlog += frame[written:]
        return len(self._backlog) > self._max_backlog

    def _refuse_unframed(
        self, items: list[Item], first: int, records: int, failed: list[Waiter]
    ) -> None:
        """Drop ``items`` (numbered from ``first``, holding ``records`` records) unsent,
        their waiters into ``failed`` (lock held)."""
        self._dropped += records
        for number in range(first, first + len(items)):
            found = self._waiting.pop(number, None)
            if found is not None:
                failed.append(found[0])

    def _drain(self) -> bool:
        """Write as much of the backlog as the pipe takes (lock held); whether the backlog
        is now over ``max_backlog`` (the caller then treats the process as dead)."""
        process = self._process
        if not self._backlog or process is None or process.stdin is None or self._down:
            return False
        try:
            written = os.write(process.stdin.fileno(), self._backlog)
        except BlockingIOError:
            written = 0
        except OSError:  # the process is gone: its reader finds out
            return False
        del self._backlog[:written]
        return len(self._backlog) > self._max_backlog

    # -- answers ---------------------------------------------------------------------
    def _read_thread(
        self, process: subprocess.Popen[bytes], frames: FrameReader, stop_read: int
    ) -> None:
        """Read answers until the process ends or the reader is retired."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while True:
            try:
                ready, _, _ = select.select([fd, stop_read], [], [])
            except (OSError, ValueError):  # the process's pipe closed under us
                return
            if stop_read in ready or not self._answer(process, frames):
                return

    def _on_readable(self, process: subprocess.Popen[bytes], frames: FrameReader) -> None:
        """The loop's reader callback."""
        assert process.stdout is not None
        self._answer(process, frames, on_loop_fd=process.stdout.fileno())

    def _answer(
        self,
        process: subprocess.Popen[bytes],
        frames: FrameReader,
        *,
        on_loop_fd: int | None = None,
    ) -> bool:
        """Take what arrived and answer its waiters; ``False`` once the process is gone.

        A frame that is not a message, or an answer the protocol does not allow (a
        malformed one, one for an item never sent to this process, answers out of
        order), means the process is broken: it is given up as a dead one is (its
        waiters fail, a new one starts), with a log line that says what it sent.
        """
        broken: str | None = None
        try:
            messages = frames.read_ready()
        except (EOFError, OSError, ValueError):
            messages, lost = [], "audit-process-exited"
        except FrameError as exc:
            messages, lost, broken = [], "protocol-error", str(exc)
        else:
            lost = ""
        yes: list[Waiter] = []
        no: list[Waiter] = []
        other: list[Message] = []
        overflow = False
        if messages:
            with self._lock:
                current = process is self._process and not self._down
                for message in messages:
                    try:
                        if message[0] == "acks":
                            if current:
                                self._take(message, yes, no)
                        elif message[0] == "refused":
                            if current:
                                self._refuse(message, no)
                        else:
                            other.append(message)
                    except _Broken as exc:
                        lost, broken = "protocol-error", str(exc)
                        break
                overflow = self._drain() if current and not lost else False
        if yes:
            answer_all(yes, ok=True)
        if no:
            answer_all(no, ok=False)
        for message in other:
            self._deliver(message)
        if lost:
            if on_loop_fd is not None and self._loop is not None:
                self._loop.remove_reader(on_loop_fd)
            self._lose(process, lost, broken)
            return False
        if overflow:
            self._lose(process, "backlog-full")
        return True

    def _deliver(self, message: Message) -> None:
        """Hand a message of the audit process's observer to ``on_message`` (never raises)."""
        if self._on_message is None:
            return
        try:
            self._on_message(message)
        except Exception as exc:
            _log.error(
                "audit device %s: a message from the audit process failed (%s)",
                self.name,
                type(exc).__name__,
            )

    def _take(self, message: Message, yes: list[Waiter], no: list[Waiter]) -> None:
        """An ``acks`` message (lock held): checked whole before any waiter is answered
        (``_Broken`` if the protocol does not allow it)."""
        if len(message) != 3 or type(message[1]) is not list:
            raise _Broken("a malformed acks message")
        answers: list[tuple[int, bool]] = message[1]
        stats = _stats_of(message[2])
        last = self._acked
        for answer in answers:
            if type(answer) is not tuple or len(answer) != 2 or type(answer[1]) is not bool:
                raise _Broken("a malformed answer")
            number = answer[0]
            if type(number) is not int:
                raise _Broken("a malformed answer")
            if not last < number <= self._last_framed:
                order = "out of order" if number <= last else "never sent"
                raise _Broken(f"an answer for item {number} {order}")
            last = number
        self._acked = last
        for number, ok in answers:
            found = self._waiting.pop(number, None)
            if found is not None:
                (yes if ok else no).append(found[0])
        self._stats = stats
        self._hung_since = None
        if self._refusing is not None and stats.up and stats.taken > self._refusing:
            self._refusing = None  # a record framed after the last refusal is written
        if not self._stats.up and self._stats.last_error:
            self.last_error = self._stats.last_error

    def _refuse(self, message: Message, no: list[Waiter]) -> None:
        """Items the audit process refused at once (its queue full): their waiters fail.
        Not a sign of progress: the lane stays hung if it was."""
        numbers = message[1] if len(message) == 2 else None
        if type(numbers) is not list:
            raise _Broken("a malformed refused message")
        for number in numbers:
            if type(number) is not int or not self._floor < number <= self._last_framed:
                raise _Broken("a refusal of an item never sent")
        _log.error(
            "audit device %s: the audit process refused %d records (its queue is full)",
            self.name,
            len(numbers),
        )
        for number in numbers:
            found = self._waiting.pop(number, None)
            if found is not None:
                no.append(found[0])

    def _lose(
        self, process: subprocess.Popen[bytes], reason: str, detail: str | None = None
    ) -> None:
        """``process`` is dead or given up (``reason``; ``detail`` for the log): fail
        everything, restart.

        Nothing it was sent or will be sent counts: waiters fail, queued events are
        dropped, and a new process starts a new stream after the back-off.
        """
        with self._lock:
            if process is not self._process or self._down:
                return  # already lost (a second report), or a stale process
            self._down = True
            self._outages += 1  # a lost audit process is a failure (metrics count it)
            self.last_error = reason
            # Queued here, dropped by it, and framed for it but never done with: all lost.
            in_flight = max(0, self._framed - self._stats.taken)
            self._dropped += self._queued + self._stats.dropped + in_flight
            before, gone = self._before, self._stats
            self._before = before._replace(
                records=before.records + gone.records, failures=before.failures + gone.failures
            )
            self._stats = _Stats(seq=gone.seq)  # its counts are now in ours
            self._items.clear()
            self._queued = 0
            self._backlog.clear()
            self._sent = _UNKNOWN
            self._cipher_sent = False
            waiting = [waiter for waiter, _ in self._waiting.values()]
            self._waiting.clear()
            restart = not self._stopping
            # Lost before it served a while (it crashes at once, or at its first
            # batch): the back-off goes on doubling, as for a start that fails.
            if time.monotonic() - self._adopted >= MAX_BACKOFF:
                self._quick = 0
            delay = min(MAX_BACKOFF, 2.0 ** min(self._quick, 8))
            self._quick += 1
            if restart:
                # Started before it is published: a ``stop`` may join it the moment the
                # loss shows (it waits for this lock, then for the dead process to end).
                restarter = threading.Thread(
                    target=self._restart,
                    args=(process, delay),
                    name=f"audit-{self.name}-restart",
                    daemon=True,
                )
                restarter.start()
                self._restarter = restarter
        _end(process)
        if restart:  # at stop the process ending is expected
            _log.error(
                "audit device %s: audit process lost (%s%s)",
                self.name,
                reason,
                f": {detail}" if detail else "",
            )
        answer_all(waiting, ok=False)

    def _restart(self, dead: subprocess.Popen[bytes], delay: float) -> None:
        with self._lock:
            reader = self._reader if self._loop is None else None
            if reader is not None:
                self._reader = None
        if reader is not None:
            reader.retire()
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("no loop")
            loop.call_soon_threadsafe(self._close_on_loop, dead)
        except RuntimeError:  # no loop, or closed: nothing reads the pipe any more
            _close_pipes(dead)
        dead.wait()
        while True:
            time.sleep(delay)
            with self._lock:
                if self._stopping:
                    return
            try:
                process, frames, seq = self._spawn()
            except Exception as exc:  # our own texts say why (another protocol version)
                _log.error(
                    "audit device %s: restarting the audit process failed (%s)",
                    self.name,
                    exc if isinstance(exc, ConfigError | OSError) else type(exc).__name__,
                )
                delay = min(MAX_BACKOFF, delay * 2)
                continue
            self._adopt(process, frames, seq)
            _log.warning("audit device %s: audit process restarted", self.name)
            return

    def _close_on_loop(self, dead: subprocess.Popen[bytes]) -> None:
        """Stop reading a dead process's pipe on the loop, then close its pipes."""
        if self._loop is not None and dead.stdout is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(dead.stdout.fileno())
        _close_pipes(dead)

    def check_hung(self, now: float) -> None:
        """The broker's watchdog tick: fail waiters whose answer is over ``timeout`` + 1 s
        late (restart the process after ``STUCK_AFTER`` such periods), and tell the
        process to forget its keys once the barrier sealed."""
        if self._sent is not _UNKNOWN and self._sent is not None and self._keys() is None:
            with self._lock:
                if self._sent is not _UNKNOWN and self._sent is not None and not self._down:
                    self._backlog += encode(("forget",))
                    self._sent = None
                    self._drain()
        limit = self._timeout + 1.0
        with self._lock:
            process = self._process
            watch = self._starvation
            since = self._hung_since
            stuck = since is not None and now - since > STUCK_AFTER * limit and not self._down
            oldest = next(iter(self._waiting.values()), None)
            late = oldest is not None and now - oldest[1] > STARVED_AFTER
            waiting: list[Waiter] = []
            if oldest is not None and now - oldest[1] > limit:
                if since is None:
                    self._hung_since = now
                    self._outages += 1  # a hang is a failure (metrics count it)
                self.last_error = "timeout"
                waiting = [waiter for waiter, _ in self._waiting.values()]
                self._waiting.clear()
        if waiting:
            _log.error("audit device %s: no answer from the audit process in time", self.name)
            answer_all(waiting, ok=False)
        if stuck and process is not None:
            self._lose(process, "audit-process-stuck")
        elif watch is not None and process is not None and watch.check(now, late):
            self._starved(process)

    def _starved(self, process: subprocess.Popen[bytes]) -> None:
        """The idle-priority ``process`` is starved: back to the normal policy, or lost
        and restarted at normal priority; this lane's processes stay at normal from now."""
        with self._lock:
            if process is not self._process or self._down:
                return
            self._starvation = None
            self._idle = False
        try:
            make_normal(process.pid)
        except OSError as exc:
            _log.error(
                "audit device %s: the audit process is starved for CPU under SCHED_IDLE and "
                "cannot be given the normal policy (%s): restarting it at normal priority",
                self.name,
                type(exc).__name__,
            )
            self._lose(process, "audit-process-starved")
            return
        _log.warning(
            "audit device %s: the audit process was starved for CPU under SCHED_IDLE: it "
            "runs at normal priority from now on (something else keeps its CPU busy; "
            'audit.process_priority = "normal" starts it there)',
            self.name,
        )


_KEPT_ENV: Final = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The audit process's environment: locale, time zone and paths only. Nothing of the
    server's own settings (``MEDSECRETS_*`` may hold a DSN's password) reaches it: its
    settings come over the pipe."""
    return {name: environ[name] for name in _KEPT_ENV if name in environ}


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if it still runs (its exit is collected by whoever waits)."""
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()


def _carries_cipher(material: tuple[object, ...] | None) -> bool:
    """Whether key material holds a deferred cipher's key (not ``None``, not why not; an
    older two-part material holds none)."""
    return material is not None and len(material) > 2 and isinstance(material[2], bytes)


def _cipher(key: bytes | None) -> RecordCipher | None:
    return RecordCipher(key) if key is not None else None


def _first_message(
    reader: FrameReader, process: subprocess.Popen[bytes], timeout: float
) -> Message:
    """The audit process's first answer (``ready`` or ``error``), within ``timeout``."""
    result: list[Message] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            result.extend(reader.read())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        process.kill()
        thread.join()
        raise ConfigError(f"the audit process did not start within {timeout:.0f} s")
    if failure or not result:
        raise ConfigError(f"the audit process exited at start ({process.wait()})")
    return result[0]
