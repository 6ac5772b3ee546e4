"""``RemoteLane``: a file device's lane whose work runs in an audit process.

It stands in for a ``Lane`` in the ``AuditBroker`` (same methods and health
attributes), but renders nothing: ``append`` packs the event into a tuple
(``sidecar.pack_event``) and queues it; ``wake`` (once per event-loop
iteration, from the broker) or an append from a thread sends what is queued
as one frame to the audit process (``audit.sidecar``), which renders, chains,
writes and fsyncs it with an ordinary ``Lane`` and answers, in order, for the
events that wait. A reader thread takes the answers and resolves the waiters
(one wake-up of each event loop per message). So the server process spends
about a tuple per record on auditing, and no thread of it waits for the GIL
around a write or an fsync.

Fail closed, as a ``Lane``:

- an event whose answer has not come within ``timeout`` + 1 s (the audit
  process is stuck: its own lane already fails writes hung for ``timeout``)
  fails, with everything waiting behind it, and the lane is *hung* until an
  answer arrives again; waiters appended while it is hung are refused at once;
- if the audit process dies, every waiter fails and the lane is *down*; a new
  process is started after a back-off (1 s, doubling to 30 s) and continues the
  chain from the file's durable head. Events appended while down are dropped
  and counted (``dropped``), their waiters refused;
- sends never block: what the pipe does not take waits in a bounded backlog
  (``max_backlog`` bytes; beyond it events are dropped and counted).

With an ``entry`` module that plugs an observer into the audit process (the
server's detectors, ``server.auditprocess``), messages other than answers go to
``on_message`` (alerts).

Keys cross the pipe, never the disk: before the first events sent after an
unseal the lane sends the device's HMAC key and the checkpoint signing key
(``key_material``), and ``("forget",)`` after a seal.
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
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from medsecrets.audit.channel import FrameError, FrameReader, Message, encode
from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.device import ChainHead
from medsecrets.audit.file import FileAuditDevice
from medsecrets.audit.record import AuditEvent
from medsecrets.audit.sidecar import LaneConfig, pack_event
from medsecrets.audit.waiter import Waiter, answer_all
from medsecrets.errors import ConfigError

__all__ = ["KeyMaterial", "RemoteLane"]

_log = logging.getLogger("medsecrets.audit")

KeyMaterial = Callable[[str], tuple[bytes, bytes] | None]
"""Device name → ``(HMAC key, checkpoint signing key)``, or ``None`` while sealed."""


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


_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class RemoteLane:
    """See module docstring. Thread-safe."""

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
        )
        """The device, for reading its files back (the audit process writes them)."""
        self._material = key_material
        self._timeout = config.timeout
        self._max_backlog = max_backlog
        self._python = python
        self._entry = entry
        self._on_message = on_message
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._items: list[tuple[bool, object]] = []
        self._number = 0  # the last event number given
        self._first = 1  # the number of the first queued event
        self._waiting: dict[int, tuple[Waiter, float]] = {}  # in number order
        self._backlog = bytearray()
        self._sent: object = None  # the key material the process has (identity)
        self._process: subprocess.Popen[bytes] | None = None
        self._frames: FrameReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_thread: int | None = None  # write end of the reader thread's stop pipe
        self._stopping = False
        self._down = True
        self._hung = False
        self._stats = _Stats()
        self.dropped = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"RemoteLane({self.name!r}, down={self._down})"

    # -- health (the Lane attributes the broker reports) --------------------------------
    @property
    def up(self) -> bool:
        """Whether the audit process runs, its last write succeeded and nothing is hung."""
        return not self._down and not self._hung and self._stats.up

    @property
    def hung(self) -> bool:
        """Whether an answer is overdue (here or in the audit process)."""
        return self._hung or self._stats.hung

    @property
    def ok(self) -> bool:
        return self.up

    @property
    def records(self) -> int:
        return self._stats.records

    @property
    def failures(self) -> int:
        return self._stats.failures

    @property
    def pending(self) -> int:
        """Events queued here or in the audit process and not yet written."""
        return len(self._items) + self._stats.pending

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
        with self._lock:
            self._process, self._frames = process, frames
            self._stats = _Stats(up=True, seq=seq)
            self._down = False
        self._listen()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the answers on ``loop`` (its thread) from now on, not in a thread: no
        thread then needs the GIL to answer the loop's waiters. Call it on ``loop``."""
        if self._loop is loop:
            return
        if self._loop is not None:
            raise RuntimeError("a remote audit lane serves one event loop")
        self._loop = loop
        thread, stop = self._thread, self._stop_thread
        if thread is not None and stop is not None:
            os.write(stop, b"x")
            thread.join()
        self._listen()

    def _listen(self) -> None:
        """Read the current process's answers: on the attached loop, else in a thread."""
        with self._lock:
            process, frames = self._process, self._frames
        if process is None or frames is None or process.stdout is None:
            return
        fd = process.stdout.fileno()
        loop = self._loop
        if loop is not None:
            loop.add_reader(fd, self._on_readable, process, frames)
            return
        stop_read, stop_write = os.pipe()
        self._stop_thread = stop_write
        self._thread = threading.Thread(
            target=self._read_thread,
            args=(process, frames, stop_read, stop_write),
            name=f"audit-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, let the audit process write it and exit."""
        self._flush()
        with self._lock:
            self._stopping = True
            process = self._process
        if process is None:
            return
        if process.stdin is not None:
            deadline = time.monotonic() + timeout
            while self._backlog and time.monotonic() < deadline:
                with self._lock:
                    self._drain()
                time.sleep(0.01)
            process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.error("audit device %s: the audit process did not stop; killed", self.name)
            process.kill()
            process.wait()
        if self._thread is not None:
            self._thread.join(timeout)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], FrameReader, int]:
        process = subprocess.Popen(
            [self._python, "-m", self._entry],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert process.stdin is not None and process.stdout is not None
        stdin = process.stdin.fileno()
        with contextlib.suppress(OSError):  # a smaller pipe only means an earlier backlog
            fcntl.fcntl(stdin, _F_SETPIPE_SZ, _PIPE_SIZE)
        reader = FrameReader(process.stdout.fileno())
        try:
            process.stdin.write(encode(self.config.to_message()))
            process.stdin.flush()
            first = _first_message(reader, process, self._start_timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
        if first[0] != "ready":
            process.wait()
            raise ConfigError(f"audit device {self.name!r}: {first[-1]}")
        os.set_blocking(stdin, False)
        os.set_blocking(process.stdout.fileno(), False)
        return process, reader, int(first[1])  # type: ignore[call-overload]

    # -- the hot path -----------------------------------------------------------------
    def append(
        self, event: AuditEvent, waiter: Waiter | None = None, *, notify: bool = True
    ) -> None:
        """Queue ``event`` (``waiter`` answered once it is durable, or not); with
        ``notify`` send it at once, else at the next ``wake``."""
        packed = pack_event(event)
        refuse = False
        with self._lock:
            if self._down or self._stopping:
                self.dropped += 1
                refuse = True
            else:
                if not self._items:
                    self._first = self._number + 1
                self._number += 1
                self._items.append((waiter is not None, packed))
                if waiter is not None:
                    if self._hung:
                        refuse = True
                    else:
                        self._waiting[self._number] = (waiter, time.monotonic())
        if refuse and waiter is not None:
            answer_all([waiter], ok=False)
        if notify:
            self._flush()

    def wake(self) -> None:
        """Send what is queued."""
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            if not self._items or self._process is None:
                return
            items, self._items = self._items, []
            frames: list[bytes] = []
            material = self._material(self.name)
            if material is not self._sent:
                frames.append(encode(("keys", *material) if material else ("forget",)))
                self._sent = material
            frames.append(encode(("events", self._first, items)))
            self._backlog += b"".join(frames)
            self._drain()

    def _drain(self) -> None:
        """Write as much of the backlog as the pipe takes (lock held)."""
        process = self._process
        if not self._backlog or process is None or process.stdin is None:
            return
        try:
            written = os.write(process.stdin.fileno(), self._backlog)
        except BlockingIOError:
            written = 0
        except OSError:  # the process is gone: the reader finds out
            return
        del self._backlog[:written]
        if len(self._backlog) > self._max_backlog:
            self.last_error = "backlog-full"
            _log.error("audit device %s: the audit process is not keeping up", self.name)
            self._backlog.clear()
            self._sent = None  # keys go again with the next frame
            self._fail_waiting_locked()

    # -- answers ---------------------------------------------------------------------
    def _read_thread(
        self,
        process: subprocess.Popen[bytes],
        frames: FrameReader,
        stop_read: int,
        stop_write: int,
    ) -> None:
        """Read answers until the process ends or ``attach`` hands reading to a loop."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        try:
            while True:
                ready, _, _ = select.select([fd, stop_read], [], [])
                if stop_read in ready:
                    return
                if not self._answer(process, frames):
                    return
        finally:
            os.close(stop_read)
            os.close(stop_write)

    def _on_readable(self, process: subprocess.Popen[bytes], frames: FrameReader) -> None:
        """The loop's reader callback."""
        if not self._answer(process, frames) and self._loop is not None:
            assert process.stdout is not None
            self._loop.remove_reader(process.stdout.fileno())

    def _answer(self, process: subprocess.Popen[bytes], frames: FrameReader) -> bool:
        """Take what arrived and answer its waiters; ``False`` once the process is gone."""
        try:
            messages = frames.read_ready()
        except (EOFError, FrameError, OSError):
            self._died(process)
            return False
        if not messages:
            return True
        yes: list[Waiter] = []
        no: list[Waiter] = []
        other: list[Message] = []
        with self._lock:
            for message in messages:
                if message[0] == "acks":
                    self._take(message, yes, no)
                else:
                    other.append(message)
            self._drain()
        if yes:
            answer_all(yes, ok=True)
        if no:
            answer_all(no, ok=False)
        for message in other:
            self._deliver(message)
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
        _, answers, stats = message
        for number, ok in answers:  # type: ignore[attr-defined]
            found = self._waiting.pop(number, None)
            if found is not None:
                (yes if ok else no).append(found[0])
        self._stats = _Stats(*stats)  # type: ignore[misc]
        self._hung = False
        if not self._stats.up and self._stats.last_error:
            self.last_error = self._stats.last_error

    def _died(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._down = True
            if self._stopping:
                return
            self.last_error = "audit-process-exited"
            waiting = self._fail_waiting_locked()
        _log.error("audit device %s: the audit process exited (%s)", self.name, process.returncode)
        answer_all(waiting, ok=False)
        threading.Thread(
            target=self._restart, args=(process,), name=f"audit-{self.name}-restart", daemon=True
        ).start()

    def _fail_waiting_locked(self) -> list[Waiter]:
        waiting = [waiter for waiter, _ in self._waiting.values()]
        self._waiting.clear()
        self._items.clear()
        self._backlog.clear()
        self._sent = None
        return waiting

    def _restart(self, dead: subprocess.Popen[bytes]) -> None:
        dead.wait()
        for pipe in (dead.stdin, dead.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        delay = 1.0
        while True:
            time.sleep(delay)
            with self._lock:
                if self._stopping:
                    return
            try:
                process, frames, seq = self._spawn()
            except Exception as exc:
                _log.error(
                    "audit device %s: restarting the audit process failed (%s)",
                    self.name,
                    type(exc).__name__,
                )
                delay = min(30.0, delay * 2)
                continue
            with self._lock:
                if self._stopping:
                    process.kill()
                    return
                self._process, self._frames = process, frames
                self._stats = _Stats(up=True, seq=seq)
                self._down = False
                self._hung = False
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._listen)
            else:
                self._listen()
            _log.warning("audit device %s: audit process restarted", self.name)
            return

    def check_hung(self, now: float) -> None:
        """Fail everything waiting once the oldest answer is over ``timeout`` + 1 s late."""
        with self._lock:
            oldest = next(iter(self._waiting.values()), None)
            if oldest is None or now - oldest[1] <= self._timeout + 1.0:
                return
            self._hung = True
            self.last_error = "timeout"
            waiting = [waiter for waiter, _ in self._waiting.values()]
            self._waiting.clear()
        _log.error("audit device %s: no answer from the audit process in time", self.name)
        answer_all(waiting, ok=False)


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
