"""``Lane``: one audit device's queue, writer thread and hash chain (group commit).

``append(event, waiter)`` renders the event on the caller's thread, under the
lane's lock (HMACs, the chain link, a signed checkpoint when one is due: a few
microseconds), and queues the line. One writer thread per lane takes
*everything* queued and hands it to ``device.write`` in one call: every request
waiting on the same fsync shares it (group commit). The writer itself holds
the GIL only briefly (the write and fsync release it), so it never convoys the
event loop. After the write the waiters of the batch are answered: yes when it
succeeded, no when it raised. A failed batch is dropped from the chain: the
head goes back to the last durable record and everything queued behind the
batch is rendered again on top of it (devices roll back partial writes), so the
stored chain never references a record that is not stored.

Batches are formed by the caller's wake-ups: a thread-side append wakes the
writer at once; on an event loop the broker wakes it once per loop iteration
(so a burst of requests becomes one batch), and also as soon as
``eager_batch`` records are queued, so that a busy loop's first records are
already being written while it renders the rest: the fsync overlaps the CPU
work instead of following it (with every connection waiting on one fsync, a
server would otherwise alternate between rendering and waiting).

With ``writer_thread=False`` there is no writer thread: the owner calls
``flush()`` to write what is queued on its own thread (the audit process,
``audit.sidecar``, which has nothing else to do meanwhile: what arrives during
the write waits in its pipe and becomes the next batch).

A write that takes longer than ``timeout`` makes the lane *hung*
(``Lane.check_hung``, called by the broker's watchdog): its pending waiters are
answered no at once, and so is every waiter appended until the write returns.
Events still queue meanwhile (up to ``max_pending``; beyond, they are dropped
and counted, and their waiters refused: the log says so once each time the queue
fills), so a device that recovers also records what happened while it was slow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from medsecrets.audit import packed
from medsecrets.audit.checkpoint import CHECKPOINT_EVERY
from medsecrets.audit.device import AuditDevice, ChainHead
from medsecrets.audit.packed import (
    PackedCompletion,
    PackedEvent,
    pack_completion,
    pack_event,
    responded,
    unpack_event,
)
from medsecrets.audit.record import AuditEvent, Completion, Salter, render_line
from medsecrets.audit.waiter import Waiter, answer_all
from medsecrets.errors import AuditFailure

__all__ = ["AuditLane", "DeviceKeys", "KeySource", "Lane", "Written"]

_LOG = logging.getLogger("medsecrets.audit")


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """A device's key material, available while the barrier is unsealed.

    ``sign(node, device, covers, covers_hash)`` returns a checkpoint record's
    signed fields (``None``: checkpoints are not signed, so none are written).
    """

    salter: Salter
    sign: Callable[[str, str, int, str], dict[str, object]] | None = None

    def __repr__(self) -> str:
        return "DeviceKeys(**********)"


class _Item(NamedTuple):
    """One queued record: its event, packed (kept to re-render after a failure and for the
    ``Written`` hook), and its line."""

    event: PackedEvent
    line: bytes
    seq: int
    digest: str


KeySource = Callable[[str], DeviceKeys | None]
"""Device name → its keys, or ``None`` while sealed (records then omit sensitive data)."""

Written = Callable[[list[PackedEvent], list[Waiter], bool], None]
"""``(events, waiters, ok)``: a ``Lane``'s hook, called on the writer thread after each
batch, once its ``waiters`` were answered: ``ok`` when the batch (``events``, packed,
checkpoints included, in chain order) is durable; when it failed, those records are lost (counted in
``dropped``) and what was queued behind them is chained again on the durable head."""


class AuditLane(Protocol):
    """What the broker needs of a lane: ``Lane`` in process, ``audit.remote.RemoteLane``
    for a file device written by an audit process."""

    name: str
    required: bool
    last_error: str | None

    @property
    def dropped(self) -> int:
        """Records never written: refused (queue full, stopping, down) or lost with a
        failed batch."""
        ...

    @property
    def device(self) -> AuditDevice:
        """The device (a reader's view of it for a remote lane)."""
        ...

    @property
    def up(self) -> bool: ...

    @property
    def hung(self) -> bool: ...

    @property
    def records(self) -> int: ...

    @property
    def failures(self) -> int: ...

    @property
    def pending(self) -> int: ...

    @property
    def head(self) -> ChainHead: ...

    @property
    def checkpoint_export(self) -> Path | None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    sends_at_once: bool
    """Whether every append is on its way to the device when it returns (else the
    broker promises a ``wake()`` after an event-loop iteration's appends)."""

    def append_packed(
        self,
        event: PackedEvent,
        completion: PackedCompletion | None = None,
        waiter: Waiter | None = None,
        *,
        notify: bool = True,
    ) -> None:
        """Queue ``event`` (``audit.packed``); with ``completion``, the request event and
        its response (``packed.responded(event, completion)``), adjacent in the chain and
        written in one batch. ``waiter`` is answered once they are durable (or not);
        ``notify=False``: the caller will ``wake()`` the lane soon. Keeps nothing of an
        append that raises."""
        ...

    def wake(self) -> None: ...

    def check_hung(self, now: float) -> None: ...

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Answer waiters on ``loop`` from now on, where the lane can (called by the
        broker with the loop its first append came from)."""
        ...


class Lane:
    """One device's writer (see module docstring). Thread-safe."""

    sends_at_once = False  # an event loop's appends wait for the broker's ``wake()``

    def __init__(
        self,
        device: AuditDevice,
        *,
        node: str,
        keys: KeySource,
        required: bool = True,
        timeout: float = 5.0,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_interval: float = 60.0,
        checkpoint_export: Path | None = None,
        max_pending: int = 100_000,
        eager_batch: int = 32,
        clock: Callable[[], float] = time.monotonic,
        on_written: Written | None = None,
        writer_thread: bool = True,
    ) -> None:
        self.device = device
        self.name = device.name
        self.required = required
        self._node = node
        self._keys = keys
        self._timeout = timeout
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval
        self._export = checkpoint_export
        self._max_pending = max_pending
        self._eager = eager_batch
        self._clock = clock
        self._on_written = on_written
        self._writer_thread = writer_thread
        self._lock = threading.Lock()  # entered directly on the hot path (a C-level lock)
        self._cond = threading.Condition(self._lock)
        self._queue: list[_Item] = []
        self._waiters: list[Waiter] = []
        self._flight: list[Waiter] = []
        self._flight_since: float | None = None
        self._hung = False
        self._full = False  # the queue filled up since the writer last took it (logged once)
        self._stopping = False
        self._head = ChainHead()
        self._tail = ChainHead()
        self._since_checkpoint = 0
        self._last_checkpoint = clock()
        self._thread: threading.Thread | None = None
        self.records = 0
        self.failures = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.ok = True

    def __repr__(self) -> str:
        return f"Lane({self.name!r}, seq={self._head.seq}, ok={self.ok})"

    @property
    def head(self) -> ChainHead:
        """The last record durably written by this lane."""
        return self._head

    @property
    def up(self) -> bool:
        """Whether the last write succeeded and none is hung."""
        return self.ok and not self._hung

    @property
    def checkpoint_export(self) -> Path | None:
        """Where this lane's checkpoints are also written, if anywhere."""
        return self._export

    @property
    def hung(self) -> bool:
        """Whether a write has been in flight for longer than the timeout."""
        return self._hung

    @property
    def pending(self) -> int:
        """Events queued and not yet handed to the device."""
        return len(self._queue)

    def start(self) -> None:
        """Open the device (resuming its chain) and start the writer thread, if any."""
        if self._export is not None:
            self._export.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._head = self._tail = self.device.open()
        if not self._writer_thread:
            return
        self._thread = threading.Thread(target=self._run, name=f"audit-{self.name}", daemon=True)
        self._thread.start()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to do: an in-process lane answers from its writer thread."""

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer and close the device."""
        if not self._writer_thread:
            self.flush()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # a write still hangs: leave the device to it
                _LOG.error("audit device %s: writer still busy at stop", self.name)
                return
        self.device.close()

    def append(
        self, event: AuditEvent, waiter: Waiter | None = None, *, notify: bool = True
    ) -> None:
        """Queue ``event``; answer ``waiter`` once it is written (or not).

        With ``notify=False`` the writer is not woken (unless ``eager_batch``
        records are now queued): the caller promises a ``wake()`` soon (the
        broker wakes the writers once per event-loop iteration, so a burst of
        requests becomes one batch and one fsync).

        If rendering raises (a bug: a checkpoint signer that fails), nothing of the
        append stays queued and ``waiter`` is not kept: the caller says no for this lane
        (the broker does), and no record is written that claims an outcome the request
        never got (an exchange's response whose checkpoint failed said 200 for a read
        refused 503) or lacks its other half.
        """
        self._enqueue(pack_event(event), None, waiter, notify, event)

    def append_exchange(
        self,
        request: AuditEvent,
        completion: Completion,
        waiter: Waiter | None = None,
        *,
        notify: bool = True,
    ) -> None:
        """``append`` both records of a request (see ``AuditLane.append_packed``, with a
        completion): both are rendered under one hold of the lock, so one batch takes both."""
        self._enqueue(pack_event(request), pack_completion(completion), waiter, notify)

    def append_packed(
        self,
        event: PackedEvent,
        completion: PackedCompletion | None = None,
        waiter: Waiter | None = None,
        *,
        notify: bool = True,
    ) -> None:
        """``append`` (or ``append_exchange``) of a packed event (``AuditLane``): an
        exchange is rendered from the tuples (``packed.render_exchange``)."""
        self._enqueue(event, completion, waiter, notify)

    def _enqueue(
        self,
        event: PackedEvent,
        completion: PackedCompletion | None,
        waiter: Waiter | None,
        notify: bool,
        unpacked: AuditEvent | None = None,
    ) -> None:
        """Render and queue ``event`` (with ``completion``: its exchange); ``unpacked`` is
        ``event`` as the caller had it, if it had an ``AuditEvent``."""
        refuse = full = False
        with self._lock:
            if self._stopping or len(self._queue) >= self._max_pending:
                self.dropped += 1 if completion is None else 2
                refuse = True
                full = not self._stopping and not self._full
                self._full |= full
            else:
                queued = len(self._queue)
                refuse = waiter is not None and self._hung
                if completion is not None and refuse:  # the read is refused: say so
                    completion = packed.refused(completion)
                tail, since = self._tail, self._since_checkpoint
                try:
                    if completion is None:
                        self._render(event, unpacked)
                    else:
                        self._render_exchange(event, completion)
                except BaseException:  # (a bug) none of it stays queued: see ``append``
                    del self._queue[queued:]
                    self._tail, self._since_checkpoint = tail, since
                    raise
                if waiter is not None and not refuse:
                    self._waiters.append(waiter)
                # A thread-side append always wakes the writer: records deferred by the
                # event loop must not wait for the loop's next iteration behind it.
                if notify or queued < self._eager <= len(self._queue):
                    self._cond.notify()
        if full:
            _LOG.error(
                "audit device %s: queue full (%d records): records dropped, requests refused",
                self.name,
                self._max_pending,
            )
        if refuse and waiter is not None:
            answer_all([waiter], ok=False)

    def wake(self) -> None:
        """Wake the writer if anything is queued (see ``append``)."""
        with self._cond:
            if self._queue:
                self._cond.notify()

    def check_hung(self, now: float) -> None:
        """Fail the waiters of a write in flight for longer than the timeout.

        A writer thread that died (a bug) counts as hung from then on, so no
        waiter is ever left unanswered: ``Waiter.wait_async`` has no timer of
        its own and relies on this watchdog (and on the API's request timeout).
        """
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stopping:
            with self._cond:
                self._hung = True
                waiters = self._flight + self._waiters
                self._flight = []
                self._waiters = []
            if waiters:
                self.last_error = "writer-died"
                _LOG.error("audit device %s: writer thread died", self.name)
                answer_all(waiters, ok=False)
            return
        since = self._flight_since
        if since is None or now - since <= self._timeout:
            return
        with self._cond:
            since = self._flight_since
            if since is None or self._hung or now - since <= self._timeout:
                return
            self._hung = True
            self.failures += 1  # a write that hangs is a failure (metrics count it)
            waiters = self._flight + self._waiters
            self._flight = []
            self._waiters = []
        self.last_error = "timeout"
        _LOG.error("audit device %s: write hung for over %.1f s", self.name, self._timeout)
        answer_all(waiters, ok=False)

    # -- rendering (under the lock) ----------------------------------------------------
    def _render(self, event: PackedEvent, unpacked: AuditEvent | None = None) -> None:
        """Chain ``event`` (``unpacked``: as an ``AuditEvent``, if at hand) after the tail,
        then a checkpoint when one is due; queue the lines."""
        keys = self._safe_keys()
        self._push(
            event,
            unpacked if unpacked is not None else unpack_event(event),
            keys.salter if keys is not None else None,
        )
        self._since_checkpoint += 1
        self._checkpoint_if_due(keys)

    def _render_exchange(self, request: PackedEvent, completion: PackedCompletion) -> None:
        """Chain ``request`` and its response (``packed.render_exchange``: both rendered at
        once), then a checkpoint when one is due: the two records stay adjacent."""
        keys = self._safe_keys()
        tail = self._tail
        seq = tail.seq + 1
        first, first_hash, second, second_hash = packed.render_exchange(
            request,
            completion,
            seq=seq,
            prev=tail.hash,
            node=self._node,
            device=self.name,
            salter=keys.salter if keys is not None else None,
        )
        queue = self._queue
        queue.append(_Item(request, first, seq, first_hash))
        queue.append(_Item(responded(request, completion), second, seq + 1, second_hash))
        self._tail = ChainHead(seq + 1, second_hash)
        self._since_checkpoint += 2
        self._checkpoint_if_due(keys)

    def _checkpoint_if_due(self, keys: DeviceKeys | None) -> None:
        """Chain a checkpoint signed with ``keys`` over the tail, if one is due (never
        without a signing key)."""
        if keys is None or keys.sign is None or not self._checkpoint_due():
            return
        tail = self._tail
        extra = keys.sign(self._node, self.name, tail.seq, tail.hash)
        checkpoint = AuditEvent(kind="checkpoint", time=_now(), extra=extra)
        self._push(pack_event(checkpoint), checkpoint, keys.salter)
        self._since_checkpoint = 0
        self._last_checkpoint = self._clock()

    def _push(self, event: PackedEvent, unpacked: AuditEvent, salter: Salter | None) -> None:
        tail = self._tail
        seq = tail.seq + 1
        line, digest = render_line(
            unpacked, seq=seq, prev=tail.hash, node=self._node, device=self.name, salter=salter
        )
        self._queue.append(_Item(event, line, seq, digest))
        self._tail = ChainHead(seq, digest)

    def _checkpoint_due(self) -> bool:
        if self._since_checkpoint >= self._checkpoint_every:
            return True
        return self._clock() - self._last_checkpoint >= self._checkpoint_interval

    # -- the writer thread ---------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._take()
            self._write_batch(batch)

    def flush(self) -> bool | None:
        """Write what is queued on this thread, as one batch (only without a writer
        thread); whether the write succeeded, ``None`` if nothing was queued."""
        if self._writer_thread:
            raise RuntimeError("this lane has a writer thread: wake() it instead")
        with self._cond:
            if not self._queue:
                return None
            batch = self._take()
        return self._write_batch(batch)

    def _take(self) -> list[_Item]:
        """Everything queued, its waiters now in flight (lock held)."""
        batch, self._queue = self._queue, []
        self._full = False
        self._flight, self._waiters = self._waiters, []
        self._flight_since = self._clock()
        return batch

    def _write_batch(self, batch: list[_Item]) -> bool:
        ok = self._write(batch)
        with self._cond:
            waiters, self._flight = self._flight, []
            self._flight_since = None
            self._hung = False
            if not ok:
                self._rechain()
        answer_all(waiters, ok=ok)
        if self._on_written is not None:
            try:
                self._on_written([item.event for item in batch], waiters, ok)
            except Exception as exc:  # the hook never stops the writer
                _LOG.error("audit device %s: on_written failed (%s)", self.name, type(exc).__name__)
        return ok

    def _write(self, batch: list[_Item]) -> bool:
        try:
            self.device.write([item.line for item in batch])
        except Exception as exc:
            self.failures += 1
            self.dropped += len(batch)  # the batch leaves the chain: its records are lost
            self.ok = False
            self.last_error = type(exc).__name__
            # our own failures say why (and hold no value, as every MedsecretsError)
            why = exc.message if isinstance(exc, AuditFailure) else type(exc).__name__
            _LOG.error("audit device %s: write failed (%s)", self.name, why)
            return False
        last = batch[-1]
        self._head = ChainHead(last.seq, last.digest)
        self.records += len(batch)
        self.ok = True
        for item in batch:
            if item.event[0] == "checkpoint":
                self._export_checkpoint(item.line)
        return True

    def _rechain(self) -> None:
        """After a failed batch (lock held): render what is queued again on the durable head.

        A device that can say what it really holds (``recover()``: a database whose
        commit succeeded although its acknowledgement was lost) moves the head there.
        """
        recover = getattr(self.device, "recover", None)
        if callable(recover):
            try:
                self._head = recover()
            except Exception as exc:  # still failing: the next write reports it
                _LOG.warning("audit device %s: recover failed (%s)", self.name, type(exc).__name__)
        queued, self._queue = self._queue, []
        self._tail = self._head
        for item in queued:
            if item.event[0] != "checkpoint":  # checkpoints are re-signed when due again
                self._render(item.event)

    def _safe_keys(self) -> DeviceKeys | None:
        try:
            return self._keys(self.name)
        except Exception as exc:  # sealed or storage trouble: record without sensitive data
            _LOG.warning("audit device %s: keys unavailable (%s)", self.name, type(exc).__name__)
            return None

    def _export_checkpoint(self, line: bytes) -> None:
        if self._export is None:
            return
        from medsecrets.audit.checkpoint import export_checkpoint

        try:
            export_checkpoint(line, self._export)
        except OSError as exc:
            self.last_error = "checkpoint-export"
            _LOG.error(
                "audit device %s: checkpoint export failed (%s)", self.name, type(exc).__name__
            )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
